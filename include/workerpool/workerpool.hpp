#pragma once

/// @file
/// The umbrella header: includes every public header of the library.

/// @namespace workerpool
/// Everything the library offers. Names in `workerpool::detail` are implementation details, not
/// part of the API.

#include <workerpool/bounded_queue.hpp>
#include <workerpool/dispatcher.hpp>
#include <workerpool/handle.hpp>
#include <workerpool/handler.hpp>
#include <workerpool/handler_map.hpp>
#include <workerpool/options.hpp>
#include <workerpool/prometheus.hpp>
#include <workerpool/request_group.hpp>
#include <workerpool/retry.hpp>
#include <workerpool/scaler.hpp>
#include <workerpool/shutdown_report.hpp>
#include <workerpool/stats.hpp>
#include <workerpool/status.hpp>
#include <workerpool/version.hpp>
