// The package test's workerpool::redis consumer: it compiles, links hiredis, and reports a bad
// address as redis_error (no server is needed).
#include <workerpool/redis/stream_consumer.hpp>

#include <cstdio>

int main() {
    workerpool::redis::consumer_options o;
    o.port = 1;  // nothing listens there
    o.stream = "s";
    o.group = "g";
    o.consumer = "c";
    o.connect_timeout = std::chrono::milliseconds(500);
    try {
        workerpool::redis::stream_consumer c([](workerpool::redis::stream_entry&) {}, o);
    } catch (const workerpool::redis::redis_error& e) {
        std::printf("redis: %s\n", e.what());
        return 0;
    }
    return 1;
}
