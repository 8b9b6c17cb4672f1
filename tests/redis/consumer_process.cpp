// One consumer process of the kill tests (kill_test.cpp): reads a stream in a group until SIGTERM,
// writes the id of every entry its handler finished to OUT (one write per line, O_APPEND, so a
// SIGKILL loses no finished line), and at SIGTERM stops and writes its counters to OUT.summary.
//
// usage: redis_consumer_process PORT STREAM GROUP CONSUMER OUT WORK_US CLAIM_IDLE_MS
//                               [MAX_DELIVERIES]
// Entries with the field poison=1 always fail (permanent_error): they must end in the
// dead-letter stream. Entries with abort=1 kill the process (std::abort) each time they run,
// after appending their id to OUT.starts: with MAX_DELIVERIES they must end in the dead-letter
// stream too.

#include <workerpool/redis/stream_consumer.hpp>

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

namespace wr = workerpool::redis;

int main(int argc, char** argv) {
    if (argc != 8 && argc != 9) {
        std::fprintf(stderr,
                     "usage: %s PORT STREAM GROUP CONSUMER OUT WORK_US CLAIM_IDLE_MS "
                     "[MAX_DELIVERIES]\n",
                     argv[0]);
        return 2;
    }
    // Entries with abort=1 abort this process, again and again: no core files for them.
    const rlimit no_core{0, 0};
    (void)setrlimit(RLIMIT_CORE, &no_core);
    (void)prctl(PR_SET_DUMPABLE, 0);

    const std::string out = argv[5];
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int starts =
        ::open((out + ".starts").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0 || starts < 0) {
        std::perror("open");
        return 1;
    }
    const auto work = std::chrono::microseconds(std::atol(argv[6]));

    // SIGTERM is taken with sigwait on this thread: block it before any thread starts.
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, nullptr);

    wr::consumer_options o;
    o.port = std::atoi(argv[1]);
    o.stream = argv[2];
    o.group = argv[3];
    o.consumer = argv[4];
    o.max_in_flight = 32;
    o.batch = 16;
    o.block = std::chrono::milliseconds(50);
    o.claim_idle = std::chrono::milliseconds(std::atol(argv[7]));
    o.max_deliveries = argc == 9 ? static_cast<unsigned>(std::atol(argv[8])) : 0U;
    o.pool.capacity = 64;
    o.pool.min_workers = 2;
    o.pool.max_workers = 2;

    auto append = [](int file, const std::string& id) {
        const std::string line = id + "\n";
        if (::write(file, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
            std::abort();  // the test would miscount: better to fail loudly
        }
    };
    wr::stream_consumer consumer(
        [&](wr::stream_entry& e) {
            if (const std::string* p = e.find("poison"); p != nullptr && *p == "1") {
                throw workerpool::permanent_error("poison entry " + e.id);
            }
            if (const std::string* a = e.find("abort"); a != nullptr && *a == "1") {
                append(starts, e.id);
                std::abort();  // an entry that kills whoever runs it
            }
            std::this_thread::sleep_for(work);
            append(fd, e.id);
        },
        o);
    std::printf("consumer %s started (pid %d)\n", argv[4], static_cast<int>(::getpid()));
    std::fflush(stdout);

    int sig = 0;
    sigwait(&term, &sig);
    const wr::consumer_stop_report report = consumer.stop(std::chrono::seconds(5));
    const wr::consumer_stats s = consumer.stats();
    std::FILE* summary = std::fopen((out + ".summary").c_str(), "w");
    if (summary == nullptr) {
        return 1;
    }
    std::fprintf(summary, "%llu %llu %llu %llu %zu %zu\n", static_cast<unsigned long long>(s.read),
                 static_cast<unsigned long long>(s.claimed),
                 static_cast<unsigned long long>(s.acknowledged),
                 static_cast<unsigned long long>(s.dead_lettered), report.left_pending,
                 report.unacknowledged);
    std::fclose(summary);
    ::close(fd);
    ::close(starts);
    return 0;
}
