// Internal: the allocator behind every coroutine frame of the runtime
// (Task<T>, BlockOn's and WhenAll's helpers), so that spawning a coroutine
// does not cost a malloc and a free.
//
// Frames come in size classes of 64 bytes up to 1 KiB (larger frames go to
// ::operator new). Each thread keeps a short free list per class; a frame
// may be freed on any thread (a coroutine often ends on another pool thread
// than the one that created it) and goes onto the freeing thread's list.
// When a thread's list is full, half of it moves to a process-wide depot
// as one batch (one lock per kBatch frames); a thread whose list is empty
// takes a batch back from the depot, or else allocates fresh memory. So a
// producer thread that spawns and a consumer thread that finishes
// coroutines pass frames back to each other in batches. The depot holds at
// most kDepotMaxBytes; beyond that freed frames go back to ::operator delete,
// which bounds the memory kept after a burst.
//
// Under AddressSanitizer a cached frame is poisoned (all but its first 16
// bytes, the pool's links, which LeakSanitizer must see), so a use after the
// coroutine ended is still reported (as use-after-poison).
//
// Thread-safety: AllocateFrame / FreeFrame are safe from any thread; each
// thread's lists are thread-local, the depot is under its own mutex. The
// thread that frees a frame must see the coroutine's end (the runtime
// guarantees that: the frame is freed by whoever resumed it last).
#pragma once

#include <cstddef>
#include <cstdint>

namespace taskq::rt::internal {

inline constexpr size_t kFrameClassBytes = 64;
inline constexpr size_t kFrameClasses = 16;  // 64 B .. 1 KiB
inline constexpr size_t kFrameLocalMax = 128;  // frames per class per thread
inline constexpr size_t kFrameBatch = kFrameLocalMax / 2;
inline constexpr size_t kDepotMaxBytes = size_t{16} << 20;

void* AllocateFrame(size_t bytes);
void FreeFrame(void* frame, size_t bytes) noexcept;

// For tests: frames cached on the calling thread for `bytes`' class, and
// bytes held by the depot.
size_t CachedFramesOnThisThread(size_t bytes);
size_t DepotBytes();

// Inherited by every promise type of the runtime: coroutine frames come
// from AllocateFrame.
struct PooledFrame {
  static void* operator new(size_t bytes) { return AllocateFrame(bytes); }
  static void operator delete(void* frame, size_t bytes) noexcept { FreeFrame(frame, bytes); }
};

}  // namespace taskq::rt::internal
