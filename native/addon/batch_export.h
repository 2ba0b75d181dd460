// How a received batch crosses into JavaScript: the (a, b) slots of a
// protocol::kItemBatch item in ReaderHandle.take()'s array.
//
// A region of at most protocol::kCopyBatchUpTo bytes is copied, with its
// offsets table in front, into one V8-owned ArrayBuffer (b: the table's
// length, a number) and its slab reference dropped at once. A larger one is
// handed over in place, as an external ArrayBuffer that keeps its slab alive
// until JavaScript detaches it (ack(), release()) or the GC collects it, with
// its offsets table copied into a Uint32Array of its own (b). Copying a small
// batch is cheaper than an external buffer's finalizer, which Node runs
// through a thread-safe immediate (one more event-loop turn per batch).
#pragma once

#include <napi.h>

#include "core/frame_assembler.h"

namespace udsipc {

struct ExportedBatch {
  Napi::Value region;   // slot a: ArrayBuffer
  Napi::Value offsets;  // slot b: the table's length (copied) or its Uint32Array (external)
};

// JS thread. Takes what it needs of `b`: its slab reference (kept by an
// external ArrayBuffer, or dropped with b after a copy). b.offsets is left
// for the caller to recycle: it has been copied either way.
ExportedBatch export_batch(Napi::Env env, Batch& b);

// JS thread. The descriptors of b's messages as an Int32Array
// [index, count, fd x count, ...], released to JavaScript (which closes
// those nobody takes); b.fds is left empty.
Napi::Int32Array export_fds(Napi::Env env, Batch& b);

}  // namespace udsipc
