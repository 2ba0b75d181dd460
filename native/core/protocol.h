// The contract between the native addon and the TypeScript layer, declared
// once. Everything a value crosses the JS<->C++ boundary with is here: the
// words of the writer's shared control block and their states, the tags and
// slot layouts of the flat arrays the addon hands to JavaScript, the metric
// names, and the defaults and limits of the options that reach the core.
//
// The addon exports all of it (binding().protocol, see native/addon/
// protocol_export.cc); src/binding.ts checks at load that the TypeScript
// side was written against the same contract (ERR_ADDON_LOAD otherwise), and
// test/protocol.test.ts compares it field by field. No other file in
// native/ restates a value defined here.
//
// Plain C++, no Node headers: the core and its tests include it too.
#pragma once

#include <cstddef>
#include <cstdint>

namespace udsipc::protocol {

// Bumped on any change below; JavaScript refuses an addon with another one.
inline constexpr uint32_t kVersion = 5;

// ─── The writer's shared control block ──────────────────────────────────────
// 32-bit words at the start of the ArrayBuffer JavaScript allocates; the ring
// follows at byte kBytes. Each group sits on its own 64-byte cache line.
// Positions are ring offsets and counts modulo 2^32. Who writes each word:
namespace ctrl {
inline constexpr int kTail = 0;          // producer: ring position after the last frame appended
inline constexpr int kHead = 16;         // IO thread: position of the first frame not fully sent
inline constexpr int kSent = 32;         // IO thread: frames fully sent (wraps)
inline constexpr int kSleep = 48;        // both, by compare-and-swap: a SendTurn
inline constexpr int kNotifyArmed = 64;  // a NotifyState: producer arms, IO thread disarms and emits kEventNotify
inline constexpr int kNotifyHead = 65;   // producer: notify once head reaches this...
inline constexpr int kNotifySent = 66;   // ...and sent reaches this
// Acknowledged delivery (WriterConfig::acked) only; zero otherwise. The ring
// space a frame holds is freed when the reader acknowledges it, not when it
// is sent: the producer reckons its room from these two instead of kHead and
// kSent.
inline constexpr int kAckHead = 80;         // IO thread: position of the first frame not acknowledged
inline constexpr int kAcked = 96;           // IO thread: frames acknowledged (wraps)
inline constexpr int kAckNotifyArmed = 112; // as kNotifyArmed, against kAckHead and kAcked:
inline constexpr int kAckNotifyHead = 113;  // acknowledged() and, in acked mode, 'drain'
inline constexpr int kAckNotifySent = 114;
inline constexpr int kWords = 128;       // words in use (kAckNotifySent's line, rounded up)
inline constexpr size_t kBytes = 512;    // control block size; the ring starts here
static_assert(static_cast<size_t>(kWords) * 4 <= kBytes);
static_assert(kBytes % 64 == 0, "the ring starts on a cache line");
// kTail, kHead, kSent and kSleep each alone on a cache line (16 words), the
// producer's notify request (three words) together on one.
inline constexpr int line(int word) { return word / 16; }
static_assert(line(kTail) != line(kHead) && line(kHead) != line(kSent) && line(kSent) != line(kSleep) &&
              line(kSleep) != line(kNotifyArmed) && line(kNotifyArmed) == line(kNotifyHead) &&
              line(kNotifyHead) == line(kNotifySent) && kNotifySent < kWords);
static_assert(line(kNotifySent) != line(kAckHead) && line(kAckHead) != line(kAcked) &&
              line(kAcked) != line(kAckNotifyArmed) && line(kAckNotifyArmed) == line(kAckNotifySent) &&
              kAckNotifySent < kWords);
}  // namespace ctrl

// Values of ctrl::kSleep: whose turn it is to send the published frames.
enum SendTurn : uint32_t {
  kIoThreadSends = 0,  // the IO thread owns the send state (busy, or will look again)
  kIdle = 1,           // the IO thread is idle, connected, nothing in flight: the
                       // producer may take the turn (kIdle -> kProducerSends, by
                       // compare-and-swap) and send directly
  kProducerSends = 2,  // the producer is sending on its own thread; it sets
                       // kIdle (all sent) or kIoThreadSends (socket full) after
};

// Values of ctrl::kNotifyArmed.
enum NotifyState : uint32_t { kDisarmed = 0, kArmed = 1 };

// ─── Reader items (ReaderHandle.take()) ─────────────────────────────────────
// A flat array, kItemSlots values per item: [tag, connId, a, b, c].
enum ItemTag : uint32_t {
  kItemBatch = 0,     // small (copied): a = ArrayBuffer [u32 offsets table | bytes], b = entries in that table;
                      // large: a = external ArrayBuffer on the slab, b = Uint32Array offsets table;
                      // c: payload bytes
  kItemOpen = 1,      // a: {pid, uid, gid} (held unread until authorize() if the Reader authorizes)
  kItemClose = 2,     // a: error object, or undefined for a clean EOF
  kItemError = 3,     // a: error object (the connection is closed right after)
  kItemStopped = 4,   // the graceful stop finished: every connection is closed, everything
                      // read was handed over; nothing follows
  kItemRejected = 5,  // a: {pid, uid, gid} of a peer refused by allowUids/allowGids (closed)
  kItemDrained = 6,   // the connection's reply queue (ReaderHandle.reply()) emptied: a = 0 when
                      // everything was sent; a = bytes discarded unsent when it made no progress
                      // for reply_timeout_ms (the connection stays open for reading)
  kItemFds = 7,       // only just before the kItemBatch whose messages carried descriptors:
                      // a = Int32Array [index, count, fd x count, index, count, ...] (the
                      // descriptors are JavaScript's from then on: it closes those not taken)
  kItemCreds = 8,     // only just before a datagram reader's kItemBatch (credentials on):
                      // a = Int32Array [pid, uid, gid] per message (int32 bits; -1 = none)
  kItemSession = 9,   // acked reader: the connection's delivery mode, known once its first frame came
                      // (before its first kItemBatch): a = the writer's session id as 32 hex digits,
                      // or undefined for a plain writer served at most once; b: first sequence
                      // number; c: sequence numbers below this were sent on an earlier connection
  kItemSeq = 10,      // acked reader: only just before a kItemBatch of an acked connection:
                      // a = sequence number of its first message, b = how many of its first
                      // messages are redelivered (sent before on an earlier connection)
};
inline constexpr int kItemSlots = 5;
// Batches whose region is at most this many bytes are copied into one
// V8-owned ArrayBuffer with their offsets table in front; larger ones are
// handed over as an external ArrayBuffer on the slab (native/addon/
// batch_export.cc). Offsets stay 32-bit with the table in front.
inline constexpr size_t kCopyBatchUpTo = 16 * 1024;
static_assert(kCopyBatchUpTo < UINT32_MAX / 2);

// ─── Writer events (WriterHandle.take()) ────────────────────────────────────
// A flat array, kEventSlots values per event: [tag, a, b, c].
enum EventTag : uint32_t {
  kEventConnect = 0,       // a: the listener's {pid, uid, gid} (SO_PEERCRED); b: connection id (1-based)
  kEventDisconnect = 1,    // a: error object (why); b: frames fully sent since start, at that moment
  kEventReconnecting = 2,  // a: error object; b: attempt; c: delay in ms
  kEventError = 3,         // a: error object
  kEventNotify = 4,        // an armed flush/drain target was reached
  kEventStopped = 5,       // a: frames discarded unsent; nothing follows
  kEventBatch = 6,         // messages the reader sent back (onMessage): encoded as a reader
                           // kItemBatch's a, b, c (region, offsets entries or table, payload bytes)
  kEventFds = 7,           // only just before the kEventBatch whose messages carried descriptors: a as
                           // a reader kItemFds's
};
inline constexpr int kEventSlots = 4;

// ─── Metric names (ReaderHandle/WriterHandle.metrics()) ─────────────────────
// The keys of the objects metrics() returns, in this order.
enum ReaderMetric : int {
  kConnections, kActiveConnections, kReadCalls, kBytesRead, kPauses, kJsThreadReads, kHandoffs,
  kReplyBytesSent, kReplySendCalls, kReplyBytesDropped, kFdsReceived, kFdsRefused,
  kReaderFdsSent, kRejectedDatagrams, kReaderAcked, kDuplicatesDropped, kRedelivered, kPlainPeers,
  kReaderMetricCount
};
inline constexpr const char* kReaderMetricNames[kReaderMetricCount] = {
    "connections", "activeConnections", "readCalls", "bytesRead", "pauses", "jsThreadReads", "handoffs",
    "replyBytesSent", "replySendCalls", "replyBytesDropped", "fdsReceived", "fdsRefused",
    "fdsSent", "rejectedDatagrams", "acked", "duplicatesDropped", "redelivered", "plainPeers"};
static_assert(kReaderMetricNames[kReaderMetricCount - 1] != nullptr, "a name for every reader metric");

enum WriterMetric : int {
  kSentFrames, kBytesSent, kSendCalls, kConnects, kDisconnects, kConnectAttempts, kUntrustedPeers,
  kSendBufferSize, kConnected, kWriterReadCalls, kWriterBytesRead, kWriterPauses,
  kWriterJsThreadReads, kFdsSent, kFdsBuffered, kWriterFdsReceived, kWriterFdsRefused, kWriterAcked,
  kResent, kWriterReplyBytesDropped, kWriterMetricCount
};
inline constexpr const char* kWriterMetricNames[kWriterMetricCount] = {
    "sent", "bytesSent", "sendCalls", "connects", "disconnects", "connectAttempts", "untrustedPeers",
    "sendBufferSize", "connected", "readCalls", "bytesRead", "pauses", "jsThreadReads", "fdsSent",
    "fdsBuffered", "fdsReceived", "fdsRefused", "acked", "resent", "replyBytesDropped"};
static_assert(kWriterMetricNames[kWriterMetricCount - 1] != nullptr, "a name for every writer metric");

// ─── Defaults and limits of options that reach the core ─────────────────────
// TypeScript validates every option (src/options.ts) and always passes each
// one; these are the same values, for the core's own configs and tests.
namespace defaults {
inline constexpr uint64_t kMaxMessageSize = 10 * 1024 * 1024;  // as in the Go library
inline constexpr size_t kSlabSize = 512 * 1024;
inline constexpr uint64_t kMaxPendingBytes = 8 * 1024 * 1024;
inline constexpr uint32_t kFrameTimeoutMs = 30000;
inline constexpr int kBacklog = 511;
inline constexpr uint32_t kReconnectInitialDelayMs = 100;
inline constexpr uint32_t kReconnectMaxDelayMs = 5000;
inline constexpr double kReconnectMultiplier = 2.0;
// Replies (a Reader's connection.write()/send()): per connection, the bytes
// queued and not yet taken by the kernel above which write() refuses, and how
// long a non-empty reply queue may make no progress before it is discarded.
inline constexpr uint64_t kMaxReplyBytes = 1024 * 1024;
// Descriptors (SCM_RIGHTS): per reader connection received and not yet
// released (maxPendingFds), and per writer held for frames not fully sent
// (maxBufferedFds).
inline constexpr uint32_t kMaxPendingFds = 256;
inline constexpr uint32_t kMaxBufferedFds = 256;
inline constexpr uint32_t kReplyTimeoutMs = 30000;
// Acknowledged delivery: how long an acked writer waits for the reader's
// greeting after connecting, and how many writer sessions an acked reader
// remembers for de-duplication.
inline constexpr uint32_t kHandshakeTimeoutMs = 5000;
inline constexpr uint32_t kMaxSessions = 1024;
}  // namespace defaults

namespace limits {
inline constexpr uint64_t kMaxMessageSize = 1024 * 1024 * 1024;  // largest maxMessageSize accepted
inline constexpr size_t kMinSlabSize = 64 * 1024;
inline constexpr size_t kMaxSlabSize = 64 * 1024 * 1024;
inline constexpr size_t kMaxPathBytes = 107;  // sun_path is 108 bytes with its NUL
inline constexpr int kMaxFdsPerMessage = 253;  // the kernel's SCM_MAX_FD: the most one sendmsg carries
}  // namespace limits

static_assert(defaults::kMaxMessageSize <= limits::kMaxMessageSize);
static_assert(limits::kMaxMessageSize <= UINT32_MAX, "batch offsets are 32-bit");
static_assert(limits::kMinSlabSize <= defaults::kSlabSize && defaults::kSlabSize <= limits::kMaxSlabSize);
static_assert(defaults::kReconnectInitialDelayMs <= defaults::kReconnectMaxDelayMs);
static_assert(defaults::kReconnectMultiplier >= 1.0);

}  // namespace udsipc::protocol
