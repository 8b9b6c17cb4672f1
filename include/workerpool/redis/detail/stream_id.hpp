#pragma once

/// @file
/// Not API: a stream entry ID ("<ms>-<seq>") as two integers, and a flat set of them, so that
/// the consumer's bookkeeping (held entries, acknowledgements owed) allocates nothing per entry.

#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace workerpool::redis::detail {

/// A stream entry ID: milliseconds and sequence number.
struct stream_id {
    std::uint64_t ms = 0;   ///< The part before the '-'.
    std::uint64_t seq = 0;  ///< The part after it.

    /// Equal when both parts are.
    friend bool operator==(const stream_id&, const stream_id&) = default;
};

/// The longest ID text: two 20-digit numbers and the '-'.
inline constexpr std::size_t max_id_text = 41;

/// Parses "<ms>-<seq>"; nullopt for anything else.
inline std::optional<stream_id> parse_id(std::string_view text) noexcept {
    // NOLINTBEGIN(cppcoreguidelines-pro-bounds-pointer-arithmetic): from_chars takes pointers.
    stream_id id;
    const char* const end = text.data() + text.size();
    const auto [dash, ec] = std::from_chars(text.data(), end, id.ms);
    if (ec != std::errc{} || dash == end || *dash != '-') {
        return std::nullopt;
    }
    const auto [last, ec2] = std::from_chars(dash + 1, end, id.seq);
    // NOLINTEND(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    if (ec2 != std::errc{} || last != end) {
        return std::nullopt;
    }
    return id;
}

/// Writes `id` as "<ms>-<seq>" at `out` (room for `max_id_text` chars); returns the end.
inline char* format_id(stream_id id, char* out) noexcept {
    // NOLINTBEGIN(cppcoreguidelines-pro-bounds-pointer-arithmetic): to_chars takes pointers.
    constexpr std::size_t digits = 20;  // of the largest 64-bit number
    out = std::to_chars(out, out + digits, id.ms).ptr;
    *out++ = '-';
    return std::to_chars(out, out + digits, id.seq).ptr;
    // NOLINTEND(cppcoreguidelines-pro-bounds-pointer-arithmetic)
}

/// `id` as text.
inline std::string to_string(stream_id id) {
    std::array<char, max_id_text> buf{};
    return {buf.data(), format_id(id, buf.data())};
}

/// A set of IDs: open addressing, linear probing, deletion by backward shift; it grows (doubling)
/// past half full, and allocates only then. Not thread-safe (its owner locks).
class id_set {
public:
    /// Room for `n` IDs before the first growth.
    explicit id_set(std::size_t n = 16) { rehash(capacity_for(n)); }

    /// Adds `id`; false if it was there already.
    bool insert(stream_id id) {
        if ((size_ + 1) * 2 > slots_.size()) {
            rehash(slots_.size() * 2);
        }
        return place(id);
    }

    /// Makes room for `n` IDs in all, so that inserting up to `n - size()` more allocates
    /// nothing (and cannot fail half-way).
    void reserve(std::size_t n) {
        if (capacity_for(n) > slots_.size()) {
            rehash(capacity_for(n));
        }
    }

    /// Whether `id` is in the set.
    [[nodiscard]] bool contains(stream_id id) const noexcept {
        for (std::size_t i = home(id); slots_[i].used; i = next(i)) {
            if (slots_[i].id == id) {
                return true;
            }
        }
        return false;
    }

    /// Removes `id` if present; returns whether it was.
    bool erase(stream_id id) noexcept {
        std::size_t i = home(id);
        for (; slots_[i].used; i = next(i)) {
            if (slots_[i].id == id) {
                break;
            }
        }
        if (!slots_[i].used) {
            return false;
        }
        // Backward shift: move later members of the probe run into the hole when their home
        // slot is not between the hole and them (cyclically).
        for (std::size_t j = next(i);; j = next(j)) {
            if (!slots_[j].used) {
                break;
            }
            const std::size_t h = home(slots_[j].id);
            const bool movable = i <= j ? (h <= i || h > j) : (h <= i && h > j);
            if (movable) {
                slots_[i] = slots_[j];
                i = j;
            }
        }
        slots_[i].used = false;
        --size_;
        return true;
    }

    /// How many IDs it holds.
    [[nodiscard]] std::size_t size() const noexcept { return size_; }

    /// Every ID, in no particular order.
    [[nodiscard]] std::vector<stream_id> items() const {
        std::vector<stream_id> out;
        out.reserve(size_);
        for (const slot& s : slots_) {
            if (s.used) {
                out.push_back(s.id);
            }
        }
        return out;
    }

    /// Removes every ID (keeps the room).
    void clear() noexcept {
        for (slot& s : slots_) {
            s.used = false;
        }
        size_ = 0;
    }

private:
    struct slot {
        stream_id id;
        bool used = false;
    };

    static std::size_t capacity_for(std::size_t n) noexcept {
        std::size_t c = 16;
        while (c < n * 2) {
            c *= 2;
        }
        return c;
    }

    [[nodiscard]] std::size_t home(stream_id id) const noexcept {
        const std::uint64_t h = (id.ms * 0x9E3779B97F4A7C15ULL) ^ (id.seq * 0xC2B2AE3D27D4EB4FULL);
        return static_cast<std::size_t>(h ^ (h >> 29)) & (slots_.size() - 1);
    }

    [[nodiscard]] std::size_t next(std::size_t i) const noexcept {
        return (i + 1) & (slots_.size() - 1);
    }

    // Puts `id` in its probe run (the table has room); false if it was there already.
    bool place(stream_id id) noexcept {
        std::size_t i = home(id);
        for (; slots_[i].used; i = next(i)) {
            if (slots_[i].id == id) {
                return false;
            }
        }
        slots_[i] = {id, true};
        ++size_;
        return true;
    }

    void rehash(std::size_t capacity) {
        std::vector<slot> old(capacity);
        old.swap(slots_);
        size_ = 0;
        for (const slot& s : old) {
            if (s.used) {
                (void)place(s.id);
            }
        }
    }

    std::vector<slot> slots_;  // a power of two in size, never full
    std::size_t size_ = 0;
};

}  // namespace workerpool::redis::detail
