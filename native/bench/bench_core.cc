// bench_core: microbenchmarks of the C++ core, without Node (npm run bench:native).
//
//   bench_core [--runs N] [--quick] [--only varint,assembler,spsc,engines] [--sizes 64,1024,102400]
//              [--seconds S]
//
// 1. varint encode / decode, ns per value, over a mix of lengths.
// 2. FrameAssembler: GB/s of wire bytes over a large buffer of mixed-size
//    frames, fed through prepare_read()/commit() in 512 KiB "reads" (a memcpy
//    stands in for read(2); a memcpy-only pass over the same chunks is shown
//    for scale), every message's first byte touched.
// 3. SpscQueue<uint64_t> ops/s between two threads (spinning on full/empty,
//    yielding every 256 failed tries so that a shared core is not wasted).
// 4. WriterEngine -> Unix socket -> ReaderEngine msgs/s at 64 B, 1 KiB and
//    100 KiB, next to the raw limit (raw_io.h: a plain writer thread and a
//    plain reader thread on a Unix socket) measured in the same run. A C++
//    producer thread plays JavaScript: it appends frames into the ring and
//    publishes the tail exactly as Writer.write() does (same ring size, same
//    count/byte limits, same 'drain' target); a consumer thread plays the
//    Reader: take(), touch every message, ack(). Both cases run in this one
//    process: engine = 4 threads (producer, writer IO, reader IO, consumer),
//    raw = 2 threads (writer, reader). CPU is the whole process.
// Medians of --runs runs (engine and raw interleaved).
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/frame_assembler.h"
#include "core/reader_engine.h"
#include "core/slab.h"
#include "core/socket_util.h"
#include "core/spsc_queue.h"
#include "core/varint.h"
#include "core/writer_engine.h"
#include "producer.h"
#include "raw_io.h"

using namespace udsipc;
using udsbench::Producer;
using udsbench::Signal;

namespace {

struct Options {
  int runs = 3;
  bool quick = false;
  double seconds = 1.0;  // target duration of one throughput run
  std::string only;      // comma-separated subset, empty = all
  std::string sizes;     // engines: comma-separated payload sizes, empty = 64,1024,102400
  bool want(const char* name) const {
    if (only.empty()) return true;
    return ("," + only + ",").find("," + std::string(name) + ",") != std::string::npos;
  }
};

template <typename T>
inline void keep(const T& v) {
  asm volatile("" : : "r,m"(v) : "memory");
}

double now_s() { return rawbench::mono_ns() / 1e9; }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string fmt_rate(double v) {
  char b[64];
  if (v >= 1e9) std::snprintf(b, sizeof b, "%.2f G", v / 1e9);
  else if (v >= 1e6) std::snprintf(b, sizeof b, "%.2f M", v / 1e6);
  else if (v >= 1e3) std::snprintf(b, sizeof b, "%.1f k", v / 1e3);
  else std::snprintf(b, sizeof b, "%.0f ", v);
  return b;
}

std::string size_label(size_t s) {
  if (s >= 1024 && s % 1024 == 0) return std::to_string(s / 1024) + " KiB";
  return std::to_string(s) + " B";
}

// ─── 1. varint ────────────────────────────────────────────────────────────────

// Frame lengths as a reader sees them: mostly small, some medium, a few large.
std::vector<uint64_t> mixed_lengths(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> v(n);
  for (auto& x : v) {
    const unsigned r = rng() % 100;
    if (r < 50) x = rng() % 128;                 // 1 byte
    else if (r < 80) x = 128 + rng() % 16256;    // 2 bytes
    else if (r < 95) x = 16384 + rng() % 2080768;  // 3 bytes
    else x = 2097152 + rng() % (1ULL << 30);     // 4-5 bytes
  }
  return v;
}

// ns per value to encode and to decode `values` back to back.
std::pair<double, double> time_varint(const std::vector<uint64_t>& values, const Options& o) {
  const size_t n = values.size();
  std::vector<uint8_t> buf(n * kMaxVarintLen);
  size_t bytes = 0;
  for (uint64_t v : values) bytes += uvarint_encode(v, buf.data() + bytes);
  const double budget = o.quick ? 0.02 : 0.2;
  std::vector<double> enc, dec;
  for (int r = 0; r < std::max(o.runs, 3); ++r) {
    uint64_t ops = 0;
    const double t0 = now_s();
    double t1;
    do {
      size_t p = 0;
      for (uint64_t v : values) p += uvarint_encode(v, buf.data() + p);
      keep(p);
      keep(buf[p - 1]);
      ops += n;
    } while ((t1 = now_s()) - t0 < budget);
    enc.push_back((t1 - t0) * 1e9 / ops);

    ops = 0;
    const double t2 = now_s();
    double t3;
    do {
      const uint8_t* p = buf.data();
      const uint8_t* end = p + bytes;
      uint64_t sum = 0;
      while (p < end) {
        uint64_t v;
        size_t c;
        if (uvarint_decode(p, end - p, ~uint64_t{0}, &v, &c) != VarintStatus::kOk) std::abort();
        sum += v;
        p += c;
      }
      keep(sum);
      ops += n;
    } while ((t3 = now_s()) - t2 < budget);
    dec.push_back((t3 - t2) * 1e9 / ops);
  }
  return {median(enc), median(dec)};
}

void bench_varint(const Options& o) {
  const size_t n = o.quick ? 1 << 16 : 1 << 20;
  std::mt19937_64 rng(3);
  auto fixed = [&](uint64_t lo, uint64_t hi) {
    std::vector<uint64_t> v(n);
    for (auto& x : v) x = lo + rng() % (hi - lo);
    return v;
  };
  struct Row {
    const char* name;
    std::vector<uint64_t> values;
  };
  const Row rows[] = {
      {"1 byte  (0-127)", fixed(0, 128)},
      {"2 bytes (128 B-16 KiB)", fixed(128, 16384)},
      {"3 bytes (16 KiB-2 MiB)", fixed(16384, 2097152)},
      {"mixed 1-5 bytes (random)", mixed_lengths(n, 42)},
  };
  std::printf("varint (%zu values back to back; ns per value)\n", n);
  std::printf("  %-28s %10s %10s\n", "lengths", "encode", "decode");
  for (const Row& r : rows) {
    const auto [e, d] = time_varint(r.values, o);
    std::printf("  %-28s %10.2f %10.2f\n", r.name, e, d);
  }
  std::printf("\n");
}

// ─── 2. FrameAssembler ────────────────────────────────────────────────────────

// One stream of frames with payload lengths from `pick`, fed to a
// FrameAssembler in 512 KiB reads; prints GB/s and msgs/s.
template <typename Pick>
void time_assembler(const char* name, const Options& o, Pick pick) {
  const size_t target = o.quick ? (8u << 20) : (64u << 20);
  std::mt19937_64 rng(7);
  std::vector<uint8_t> stream;
  stream.reserve(target + (300 << 10));
  uint64_t frames = 0, payload = 0;
  while (stream.size() < target) {
    const size_t len = pick(rng);
    uint8_t h[kMaxVarintLen];
    const size_t hn = uvarint_encode(len, h);
    stream.insert(stream.end(), h, h + hn);
    const size_t at = stream.size();
    stream.resize(at + len, static_cast<uint8_t>(frames));
    ++frames;
    payload += len;
  }
  const size_t chunk = 512 * 1024;
  const int reps = o.quick ? 1 : 4;

  std::vector<double> gbs, mps, copy_gbs;
  SlabPool* pool = SlabPool::create(512 * 1024, 16);  // as the reader engine
  for (int r = 0; r < std::max(o.runs, 3) + 1; ++r) {  // the first run warms up
    uint64_t got = 0, sum = 0;
    const double t0 = now_s();
    for (int rep = 0; rep < reps; ++rep) {
      AssemblerConfig cfg;
      cfg.pool = pool;
      FrameAssembler fa(cfg);
      size_t off = 0;
      while (off < stream.size()) {
        auto [p, n] = fa.prepare_read();
        const size_t k = std::min({n, chunk, stream.size() - off});
        std::memcpy(p, stream.data() + off, k);
        off += k;
        if (!fa.commit(k)) std::abort();
        while (fa.has_batch()) {
          Batch b = fa.take_batch();
          const size_t c = b.count();
          for (size_t i = 0; i < c; ++i) {
            const uint32_t s = b.offsets[2 * i];
            if (b.offsets[2 * i + 1] > s) sum += b.base[s];
          }
          got += c;
        }
      }
    }
    const double dt = now_s() - t0;
    keep(sum);
    if (got != frames * reps) {
      std::fprintf(stderr, "assembler: %" PRIu64 " frames, expected %" PRIu64 "\n", got, frames * reps);
      std::exit(1);
    }
    // memcpy alone over the same chunks into a 512 KiB buffer, for scale.
    std::vector<uint8_t> dst(chunk);
    const double t2 = now_s();
    for (int rep = 0; rep < reps; ++rep) {
      for (size_t off = 0; off < stream.size(); off += chunk) {
        const size_t k = std::min(chunk, stream.size() - off);
        std::memcpy(dst.data(), stream.data() + off, k);
        keep(dst[0]);
      }
    }
    const double dc = now_s() - t2;
    if (r == 0) continue;
    gbs.push_back(static_cast<double>(stream.size()) * reps / dt / 1e9);
    mps.push_back(static_cast<double>(got) / dt);
    copy_gbs.push_back(static_cast<double>(stream.size()) * reps / dc / 1e9);
  }
  pool->unref();
  std::printf("  %-34s %8.0f %10.0f %8.2f %12s %8.2f\n", name, static_cast<double>(payload) / frames,
              stream.size() / 1048576.0, median(gbs), fmt_rate(median(mps)).c_str(), median(copy_gbs));
}

void bench_assembler(const Options& o) {
  std::printf("FrameAssembler (512 KiB reads, memcpy standing in for read(2); every message touched)\n");
  std::printf("  %-34s %8s %10s %8s %12s %8s\n", "stream", "avg B", "MiB", "GB/s", "msgs/s", "memcpy");
  time_assembler("64 B", o, [](std::mt19937_64&) { return size_t{64}; });
  time_assembler("small: 16-128 B", o, [](std::mt19937_64& rng) { return size_t{16} + rng() % 113; });
  time_assembler("1 KiB", o, [](std::mt19937_64&) { return size_t{1024}; });
  // 60 % < 128 B, 30 % 128 B-4 KiB, 9 % 4-64 KiB, 1 % 64-256 KiB (some above
  // the 128 KiB large-frame threshold, which get their own buffer).
  time_assembler("mixed: 60% <128 B ... 1% <256 KiB", o, [](std::mt19937_64& rng) {
    const unsigned r = rng() % 100;
    if (r < 60) return static_cast<size_t>(rng() % 128);
    if (r < 90) return static_cast<size_t>(128 + rng() % (4096 - 128));
    if (r < 99) return static_cast<size_t>(4096 + rng() % (65536 - 4096));
    return static_cast<size_t>(65536 + rng() % (262144 - 65536));
  });
  std::printf("  (GB/s = wire bytes incl. headers through assembler; memcpy = the copy alone over the same chunks)\n\n");
}

// ─── 3. SpscQueue ─────────────────────────────────────────────────────────────

void bench_spsc(const Options& o) {
  const uint64_t n = o.quick ? 2000000 : 20000000;
  std::vector<double> ops;
  for (int r = 0; r < std::max(o.runs, 3); ++r) {
    SpscQueue<uint64_t> q(4096);
    std::atomic<bool> go{false};
    uint64_t sum = 0;
    std::thread consumer([&] {
      while (!go.load()) {
      }
      unsigned idle = 0;
      for (uint64_t i = 0; i < n;) {
        uint64_t* f = q.front();
        if (!f) {
          if (++idle % 256 == 0) std::this_thread::yield();  // a shared core: let the producer run
          continue;
        }
        sum += *f;
        q.pop();
        ++i;
      }
    });
    const double t0 = now_s();
    go.store(true);
    unsigned idle = 0;
    for (uint64_t i = 0; i < n;) {
      if (q.try_push(i)) ++i;
      else if (++idle % 256 == 0) std::this_thread::yield();
    }
    consumer.join();
    const double dt = now_s() - t0;
    if (sum != n * (n - 1) / 2) std::abort();
    ops.push_back(n / dt);
  }
  std::printf("SpscQueue<uint64_t> (capacity 4096, 2 threads, spinning; yield every 256 failed tries)\n");
  std::printf("  %-28s %10s ops/s  (%.1f ns/op)\n", "push+pop", fmt_rate(median(ops)).c_str(), 1e9 / median(ops));
  std::printf("\n");
}

// ─── 4. engines vs raw ────────────────────────────────────────────────────────

struct PairResult {
  double msgs_per_sec = 0, bytes_per_sec = 0, cpu = 0;  // cpu: process seconds
  uint64_t count = 0;
};

std::string temp_socket(const char* tag) {
  char tmpl[] = "/tmp/uds-bench-XXXXXX";
  const char* dir = ::mkdtemp(tmpl);
  if (!dir) rawbench::die("mkdtemp");
  return std::string(dir) + "/" + tag + ".sock";
}

void remove_socket(const std::string& path) {
  ::unlink(path.c_str());
  ::rmdir(path.substr(0, path.rfind('/')).c_str());
}

PairResult run_engines(size_t size, uint64_t count) {
  const std::string path = temp_socket("engine");
  Listener l = listen_unix(path, 511, 0600);
  if (l.error) {
    std::fprintf(stderr, "listen_unix failed on %s\n", path.c_str());
    std::exit(1);
  }
  Signal rsig;
  ReaderConfig rcfg;  // the JavaScript Reader's defaults
  rcfg.listen_fd = std::move(l.fd);
  rcfg.path = path;
  rcfg.dev = l.dev;
  rcfg.ino = l.ino;
  rcfg.assembler.slab_size = 512 * 1024;
  rcfg.assembler.max_message_size = 10 * 1024 * 1024;
  rcfg.max_pending_bytes = 8 * 1024 * 1024;
  // jsThreadPolling's default on this class of machine (<= 2 CPUs: 'always'):
  // the consumer thread polls the loop itself, under load too.
  rcfg.js_thread_polling = true;
  rcfg.js_thread_under_load = std::thread::hardware_concurrency() <= 2;
  ReaderEngine reader(std::move(rcfg), [&] { rsig.notify(); });

  // The JavaScript Writer's defaults: 16 MiB ring, 10,000 queued writes, 4 MiB SO_SNDBUF.
  Producer prod(16 * 1024 * 1024, 10000);
  WriterConfig wcfg;
  wcfg.path = path;
  wcfg.ctrl = prod.ctrl();
  wcfg.ring = prod.ring();
  wcfg.capacity = prod.capacity();
  wcfg.send_buffer_size = 4 * 1024 * 1024;
  WriterEngine writer(wcfg, [&] { prod.on_notify(); });
  prod.attach(&writer);

  const rawbench::Cpu c0 = rawbench::cpu_now();
  reader.start();
  writer.start();
  std::thread producer([&] {
    // The messages are ready before they are written, as raw's payload is:
    // for small sizes 256 of them, message i being the one whose first byte
    // is i & 0xff. Storing that byte just before write() copies the message
    // stalls the copy's loads on the store (store forwarding fails from a
    // byte to a wider load): a cost of this loop, several times raw's
    // memmove for small messages, not of the engine. raw patches its copy
    // instead. Above
    // 4 KiB one buffer is patched: the stall is small next to the copy.
    const bool ready = size > 0 && size <= 4096;
    std::vector<uint8_t> msgs((ready ? 256 : 1) * std::max<size_t>(size, 1), 0x5a);
    if (ready) {
      for (size_t k = 0; k < 256; ++k) msgs[k * size] = static_cast<uint8_t>(k);
    }
    prod.write_run(msgs.data(), ready ? 256 : 1, static_cast<uint32_t>(size), count);
    prod.finish();
  });

  uint64_t got = 0, bytes = 0, sum = 0, at_first = 0, bytes_first = 0;
  int64_t first_ns = 0, last_ns = 0;
  std::vector<ReaderItem> items;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  bool polling = false;  // as the addon's uv_poll: watching the engine's loop
  while (got < count) {
    items.clear();
    if (reader.take(items) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        std::fprintf(stderr, "engines: timed out after %" PRIu64 " of %" PRIu64 " messages\n", got, count);
        std::exit(1);
      }
      if (reader.take_poll_request()) polling = true;
      if (polling) {
        pollfd pfd{reader.poll_fd(), POLLIN, 0};
        if (::poll(&pfd, 1, 20) > 0) polling = reader.js_thread_poll();
      } else {
        rsig.wait(20);
      }
      continue;
    }
    if (reader.take_poll_request()) polling = true;
    bool any = false;
    for (auto& it : items) {
      if (it.type != ReaderItem::kBatch) continue;
      Batch& b = it.batch;
      const size_t c = b.count();
      for (size_t i = 0; i < c; ++i) {
        const uint32_t s = b.offsets[2 * i];
        if (b.offsets[2 * i + 1] > s) sum += b.base[s];
      }
      got += c;
      bytes += b.payload_bytes;
      any = true;
      reader.ack(it.conn_id, b.length);
      reader.recycle_offsets(std::move(b.offsets));  // as the addon does once it has copied them
    }
    if (any) {
      const int64_t now = rawbench::mono_ns();
      if (!first_ns) {
        first_ns = now;
        at_first = got;
        bytes_first = bytes;
      }
      last_ns = now;
    }
  }
  const rawbench::Cpu c1 = rawbench::cpu_now();
  producer.join();
  writer.close();
  reader.close();
  remove_socket(path);
  if (sum != rawbench::expected_checksum(count, size)) {
    std::fprintf(stderr, "engines: checksum mismatch\n");
    std::exit(1);
  }
  PairResult r;
  const double dt = (last_ns - first_ns) / 1e9;
  r.count = count;
  r.msgs_per_sec = dt > 0 ? (got - at_first) / dt : 0;
  r.bytes_per_sec = dt > 0 ? (bytes - bytes_first) / dt : 0;
  r.cpu = (c1.user + c1.sys) - (c0.user + c0.sys);
  return r;
}

PairResult run_raw(size_t size, uint64_t count) {
  const std::string path = temp_socket("raw");
  const int lfd = rawbench::listen_path(path);
  const rawbench::Cpu c0 = rawbench::cpu_now();
  rawbench::ReaderStats st;
  std::thread rd([&] {
    const int fd = rawbench::accept_one(lfd);
    st = rawbench::raw_read(fd, count);
    ::close(fd);
  });
  std::thread wr([&] {
    const int fd = rawbench::connect_path(path);
    rawbench::set_sndbuf(fd, 4 * 1024 * 1024);
    rawbench::raw_write(fd, size, count, size_t{1} << 20);
    ::close(fd);
  });
  rd.join();
  wr.join();
  const rawbench::Cpu c1 = rawbench::cpu_now();
  ::close(lfd);
  remove_socket(path);
  if (st.checksum != rawbench::expected_checksum(count, size)) {
    std::fprintf(stderr, "raw: checksum mismatch\n");
    std::exit(1);
  }
  PairResult r;
  r.count = count;
  r.msgs_per_sec = st.msgs_per_sec();
  r.bytes_per_sec = st.bytes_per_sec();
  r.cpu = (c1.user + c1.sys) - (c0.user + c0.sys);
  return r;
}

void bench_engines(const Options& o) {
  struct Case {
    size_t size;
    double expect_msgs;  // rough raw rate, to size N for ~o.seconds
  };
  const Case cases[] = {{64, 40e6}, {1024, 5e6}, {100 * 1024, 60e3}};
  std::printf("WriterEngine -> Unix socket -> ReaderEngine vs raw limit (median of %d runs)\n", o.runs);
  std::printf("  %-8s %10s | %12s %10s %11s | %12s %10s %11s | %8s %s\n", "size", "N", "engine msg/s", "MB/s",
              "cpu s/Mmsg", "raw msg/s", "MB/s", "cpu s/Mmsg", "eng/raw", o.runs > 1 ? "(per run)" : "");
  for (const Case& c : cases) {
    if (!o.sizes.empty() && ("," + o.sizes + ",").find("," + std::to_string(c.size) + ",") == std::string::npos) continue;
    uint64_t n = static_cast<uint64_t>(c.expect_msgs * o.seconds);
    if (o.quick) n = std::max<uint64_t>(n / 50, 200);
    std::vector<double> em, eb, ec, rm, rb, rc, ratios;
    for (int r = 0; r < o.runs; ++r) {
      const PairResult e = run_engines(c.size, n);
      const PairResult w = run_raw(c.size, n);
      em.push_back(e.msgs_per_sec);
      eb.push_back(e.bytes_per_sec);
      ec.push_back(e.cpu / (n / 1e6));
      rm.push_back(w.msgs_per_sec);
      rb.push_back(w.bytes_per_sec);
      rc.push_back(w.cpu / (n / 1e6));
      if (w.msgs_per_sec > 0) ratios.push_back(e.msgs_per_sec / w.msgs_per_sec);
    }
    const double ratio = median(rm) > 0 ? median(em) / median(rm) : 0;
    // The ratio of the medians, then each run's own (engine and raw run in
    // turn, so a slow phase of the machine hits both of a pair).
    std::string per_run;
    if (ratios.size() > 1) {
      std::sort(ratios.begin(), ratios.end());
      for (double x : ratios) per_run += (per_run.empty() ? "(" : " ") + std::to_string(static_cast<int>(x * 100 + 0.5));
      per_run += ")";
    }
    std::printf("  %-8s %10" PRIu64 " | %12s %10.0f %11.3f | %12s %10.0f %11.3f | %7.0f%% %s\n", size_label(c.size).c_str(),
                n, fmt_rate(median(em)).c_str(), median(eb) / 1e6, median(ec), fmt_rate(median(rm)).c_str(),
                median(rb) / 1e6, median(rc), ratio * 100, per_run.c_str());
    std::fflush(stdout);
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      o.quick = true;
      o.runs = 1;
    } else if (a == "--runs" && i + 1 < argc) {
      o.runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--seconds" && i + 1 < argc) {
      o.seconds = std::atof(argv[++i]);
    } else if (a == "--only" && i + 1 < argc) {
      o.only = argv[++i];
    } else if (a == "--sizes" && i + 1 < argc) {
      o.sizes = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: bench_core [--runs N] [--quick] [--seconds S] [--only varint,assembler,spsc,engines] "
                   "[--sizes 64,1024,102400]\n");
      return 1;
    }
  }
  std::printf("bench_core: %ld CPUs online, runs=%d%s\n\n", ::sysconf(_SC_NPROCESSORS_ONLN), o.runs,
              o.quick ? " (quick: tiny N, numbers meaningless)" : "");
  if (o.want("varint")) bench_varint(o);
  if (o.want("assembler")) bench_assembler(o);
  if (o.want("spsc")) bench_spsc(o);
  if (o.want("engines")) bench_engines(o);
  return 0;
}
