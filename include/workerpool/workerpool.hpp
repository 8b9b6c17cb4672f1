#pragma once

/// The umbrella header: everything a user of workerpool needs.
#include <workerpool/bounded_queue.hpp>
#include <workerpool/dispatcher.hpp>
#include <workerpool/handler_map.hpp>
#include <workerpool/options.hpp>
#include <workerpool/retry.hpp>
#include <workerpool/scaler.hpp>
#include <workerpool/stats.hpp>
#include <workerpool/status.hpp>
#if __has_include(<workerpool/version.hpp>)
#include <workerpool/version.hpp>
#endif
