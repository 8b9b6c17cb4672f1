#pragma once

/// @file
/// Not API: one blocking hiredis connection, and how a reply is read (parsed, and classified as
/// an answer, a definite error, a transient error, or a broken connection).

#include <workerpool/redis/stream_entry.hpp>

#include <hiredis/hiredis.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace workerpool::redis::detail {

/// Frees a hiredis reply.
struct reply_deleter {
    /// Frees `r`.
    void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
/// An owned hiredis reply; null when the connection failed.
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

/// Frees a hiredis context.
struct context_deleter {
    /// Frees `c`.
    void operator()(redisContext* c) const noexcept { redisFree(c); }
};

/// `d` as a `timeval`.
inline timeval to_timeval(std::chrono::milliseconds d) noexcept {
    timeval tv{};
    tv.tv_sec = static_cast<decltype(tv.tv_sec)>(d.count() / 1000);
    tv.tv_usec = static_cast<decltype(tv.tv_usec)>((d.count() % 1000) * 1000);
    return tv;
}

/// Element `i` of the array reply `r` (hiredis keeps them in a C array). Pre: `i < r->elements`.
inline const redisReply* at(const redisReply* r, std::size_t i) noexcept {
    return r->element[i];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic): hiredis's
}

/// Element `i` of the array reply `r`. Pre: `i < r->elements`.
inline const redisReply* at(const reply_ptr& r, std::size_t i) noexcept {
    return at(r.get(), i);
}

/// The string of a string, status or error reply; empty otherwise.
inline std::string reply_text(const redisReply* r) {
    if (r == nullptr || r->str == nullptr) {
        return {};
    }
    return {r->str, r->len};
}

/// Whether `r` is an error reply.
inline bool is_error(const redisReply* r) noexcept {
    return r != nullptr && r->type == REDIS_REPLY_ERROR;
}

/// What a reply means for the command that got it.
enum class reply_class {
    ok,         ///< An answer (possibly nil or empty).
    error,      ///< A definite error: the command failed and will fail again as sent.
    transient,  ///< The server cannot answer now (loading, busy, failing over): retry later.
    broken,     ///< No reply: the connection failed or timed out.
};

/// Whether an error reply's text says "not now" rather than "no": LOADING (restarting), BUSY (a
/// script runs), TRYAGAIN, READONLY / MASTERDOWN / CLUSTERDOWN (failing over), MISCONF (cannot
/// persist) and NOAUTH (the server restarted with a password: reconnecting authenticates).
inline bool is_transient_error(std::string_view text) noexcept {
    constexpr std::array<std::string_view, 8> prefixes = {"LOADING",  "BUSY",       "TRYAGAIN",
                                                          "READONLY", "MASTERDOWN", "CLUSTERDOWN",
                                                          "MISCONF",  "NOAUTH"};
    for (const std::string_view p : prefixes) {
        if (text.substr(0, p.size()) == p && (text.size() == p.size() || text[p.size()] == ' ')) {
            return true;
        }
    }
    return false;
}

/// Classifies a reply (null: the connection broke).
inline reply_class classify(const redisReply* r) noexcept {
    if (r == nullptr) {
        return reply_class::broken;
    }
    if (r->type != REDIS_REPLY_ERROR) {
        return reply_class::ok;
    }
    return is_transient_error(std::string_view(r->str, r->len)) ? reply_class::transient
                                                                : reply_class::error;
}

/// Where and as whom to connect. The password never appears in an error message or event.
struct endpoint {
    std::string host;      ///< Host name or address.
    int port = 6379;       ///< TCP port.
    std::string username;  ///< ACL user; empty = AUTH with the password only.
    std::string password;  ///< Empty = no AUTH.
    std::chrono::milliseconds connect_timeout{2000};  ///< Limit on the TCP connect.
    std::chrono::milliseconds reply_timeout{5000};    ///< Limit on each reply.
    std::string client_name;                          ///< CLIENT SETNAME; empty = none.
};

/// One blocking hiredis connection; used by one thread at a time.
class connection {
public:
    /// Connects (TCP only: no AUTH, no name); on failure `ok()` is false and `error()` says why.
    connection(const std::string& host, int port, std::chrono::milliseconds connect_timeout,
               std::chrono::milliseconds reply_timeout)
        : context_(redisConnectWithTimeout(host.c_str(), port, to_timeval(connect_timeout))) {
        if (context_ == nullptr) {
            error_ = "out of memory";
        } else if (context_->err != 0) {
            error_ = static_cast<const char*>(context_->errstr);
        } else if (redisSetTimeout(context_.get(), to_timeval(reply_timeout)) != REDIS_OK) {
            error_ = "cannot set the socket timeout";
        } else {
            // hiredis frees its read buffer whenever it empties with more than 16 KiB spare, so
            // a stream of ~10 KiB replies allocated and freed it for each one; keep up to 1 MiB.
            context_->reader->maxbuf = std::size_t{1} << 20;
        }
    }

    /// Whether the connection is usable (connected, and no command failed on it).
    [[nodiscard]] bool ok() const noexcept {
        return context_ != nullptr && context_->err == 0 && error_.empty();
    }

    /// Why the connection is not usable; empty while it is.
    [[nodiscard]] std::string error() const {
        if (!error_.empty()) {
            return error_;
        }
        return context_ != nullptr && context_->err != 0
                   ? std::string(static_cast<const char*>(context_->errstr))
                   : std::string();
    }

    /// Marks the connection unusable with `why` (a reply that leaves its state unknown).
    void poison(std::string why) {
        if (error_.empty()) {
            error_ = std::move(why);
        }
    }

    /// Sends one command and waits for its reply; null when the connection failed.
    reply_ptr command(const std::vector<std::string>& args) {
        if (!append(args)) {
            return nullptr;
        }
        return reply();
    }

    /// Queues a command (pipelining); read its reply with `reply()`.
    bool append(const std::vector<std::string>& args) {
        argv_.clear();
        lengths_.clear();
        for (const std::string& a : args) {
            argv_.push_back(a.data());
            lengths_.push_back(a.size());
        }
        return append_argv();
    }

    /// Queues a command given as views (no copies of the arguments).
    bool append_views(const std::vector<std::string_view>& args) {
        argv_.clear();
        lengths_.clear();
        for (const std::string_view a : args) {
            argv_.push_back(a.data());
            lengths_.push_back(a.size());
        }
        return append_argv();
    }

    /// Queues a command already in the protocol's format (`*<n>\r\n$<len>\r\n<arg>\r\n...`).
    bool append_formatted(std::string_view command) {
        return ok() && redisAppendFormattedCommand(context_.get(), command.data(),
                                                   command.size()) == REDIS_OK;
    }

    /// The next reply of a queued command; null when the connection failed.
    reply_ptr reply() {
        if (!ok()) {
            return nullptr;
        }
        void* r = nullptr;
        if (redisGetReply(context_.get(), &r) != REDIS_OK) {
            return nullptr;
        }
        return reply_ptr(static_cast<redisReply*>(r));
    }

private:
    bool append_argv() {
        if (!ok()) {
            return false;
        }
        return redisAppendCommandArgv(context_.get(), static_cast<int>(argv_.size()), argv_.data(),
                                      lengths_.data()) == REDIS_OK;
    }

    std::unique_ptr<redisContext, context_deleter> context_;
    std::string error_;
    std::vector<const char*> argv_;  // scratch for append
    std::vector<std::size_t> lengths_;
};

/// What `open` got: a usable connection, or why not (and whether trying later may help).
struct open_result {
    std::unique_ptr<connection> conn;          ///< Set on success only.
    reply_class status = reply_class::broken;  ///< `ok`, or the kind of failure.
    std::string error;                         ///< Why it failed; never contains the password.
};

/// Connects to `e`, authenticates (AUTH) when it has a password and names the connection.
inline open_result open(const endpoint& e) {
    open_result out;
    auto c = std::make_unique<connection>(e.host, e.port, e.connect_timeout, e.reply_timeout);
    if (!c->ok()) {
        out.error =
            "cannot connect to " + e.host + ":" + std::to_string(e.port) + ": " + c->error();
        return out;
    }
    auto step = [&](const std::vector<std::string>& cmd, const std::string& what) {
        const reply_ptr r = c->command(cmd);
        out.status = classify(r.get());
        if (out.status != reply_class::ok) {
            out.error = what + " " + e.host + ":" + std::to_string(e.port) + ": " +
                        (r == nullptr ? c->error() : reply_text(r.get()));
        }
        return out.status == reply_class::ok;
    };
    if (!e.password.empty()) {
        std::vector<std::string> auth{"AUTH", e.password};
        if (!e.username.empty()) {
            auth.insert(auth.begin() + 1, e.username);
        }
        const std::string as = e.username.empty() ? "" : " as '" + e.username + "'";
        if (!step(auth, "cannot authenticate" + as + " to")) {
            return out;
        }
    }
    if (!e.client_name.empty() &&
        !step({"CLIENT", "SETNAME", e.client_name}, "cannot name the connection to")) {
        if (out.status != reply_class::error) {
            return out;
        }
        // A name Redis refuses (it has a space) only costs the label, not the connection.
    }
    out.status = reply_class::ok;
    out.error.clear();
    out.conn = std::move(c);
    return out;
}

/// Parses one stream entry, [id, [field, value, ...]], into `e`, reusing the memory `e` already
/// has; false (and `e` unspecified) for an entry whose body was deleted from the stream (its
/// field array is nil).
inline bool parse_entry_into(const redisReply* r, stream_entry& e) {
    if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        return false;
    }
    const redisReply* id = at(r, 0);
    const redisReply* body = at(r, 1);
    if (id->str == nullptr || id->len == 0 || body == nullptr || body->type != REDIS_REPLY_ARRAY) {
        return false;
    }
    auto assign = [](std::string& to, const redisReply* from) {
        if (from->str == nullptr) {
            to.clear();
        } else {
            to.assign(from->str, from->len);
        }
    };
    assign(e.id, id);
    e.fields.resize(body->elements / 2);
    for (std::size_t i = 0; i < e.fields.size(); ++i) {
        assign(e.fields[i].first, at(body, 2 * i));
        assign(e.fields[i].second, at(body, 2 * i + 1));
    }
    return true;
}

/// Parses one stream entry; nullopt for an entry whose body was deleted from the stream.
inline std::optional<stream_entry> parse_entry(const redisReply* r) {
    stream_entry e;
    if (!parse_entry_into(r, e)) {
        return std::nullopt;
    }
    return e;
}

/// The id of an entry reply, even when its body is gone.
inline std::string entry_id(const redisReply* r) {
    if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        return {};
    }
    return reply_text(at(r, 0));
}

}  // namespace workerpool::redis::detail
