#pragma once

/// @file
/// `stream_entry` (one Redis stream entry) and `redis_error`, shared by `stream_consumer` and
/// `stream_producer`.

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

/// @namespace workerpool::redis
/// The Redis Streams integration: `stream_consumer`, `stream_producer` and what they need.
namespace workerpool::redis {

/// One stream entry, as the handler receives it.
// NOLINTBEGIN(misc-non-private-member-variables-in-classes): a plain record users read and move.
struct stream_entry {
    /// The entry's ID in the stream, e.g. "1700000000000-0".
    std::string id;
    /// The entry's field/value pairs, in stream order (a field may repeat).
    std::vector<std::pair<std::string, std::string>> fields;

    /// Returns the value of the first field called `name`, or null if there is none.
    [[nodiscard]] const std::string* find(std::string_view name) const noexcept {
        for (const auto& [field, value] : fields) {
            if (field == name) {
                return &value;
            }
        }
        return nullptr;
    }
};
// NOLINTEND(misc-non-private-member-variables-in-classes)

/// Thrown when the server cannot be reached or refuses the credentials at construction, or
/// answers a set-up command (or a producer's command) with an error. Its message names the
/// address and the server's reply, never the password.
class redis_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace workerpool::redis
