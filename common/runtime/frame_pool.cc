#include "common/runtime/frame_pool.h"

#include <new>

#include "common/runtime/sanitizers.h"
#include "common/sync.h"

#ifdef TASKQ_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace taskq::rt::internal {
namespace {

// A cached frame's first bytes: its link in a thread's list, and (in the
// first frame of a depot batch) the link to the next batch.
struct FreeFrameLink {
  FreeFrameLink* next;
  FreeFrameLink* next_batch;
};

size_t ClassBytes(size_t cls) { return (cls + 1) * kFrameClassBytes; }

// The size class of a frame of `bytes`, or kNoClass for frames the pool
// does not keep (empty, or above the largest class).
constexpr size_t kNoClass = kFrameClasses;
size_t ClassOf(size_t bytes) {
  if (bytes == 0 || bytes > kFrameClasses * kFrameClassBytes) return kNoClass;
  return (bytes - 1) / kFrameClassBytes;
}

// Cached frames are poisoned under ASan, except their link words:
// LeakSanitizer does not look for pointers in poisoned memory, so a
// poisoned link would make every frame behind it look leaked. (A stale
// resume() of a cached frame still crashes: it jumps to a heap address.)
void Poison(FreeFrameLink* f, size_t cls) {
#ifdef TASKQ_ASAN
  ASAN_POISON_MEMORY_REGION(f + 1, ClassBytes(cls) - sizeof(FreeFrameLink));
#else
  (void)f;
  (void)cls;
#endif
}
void UnpoisonAll(FreeFrameLink* f, size_t cls) {
#ifdef TASKQ_ASAN
  ASAN_UNPOISON_MEMORY_REGION(f, ClassBytes(cls));
#else
  (void)f;
  (void)cls;
#endif
}

// The process-wide depot: batches of kFrameBatch frames per class.
class Depot {
 public:
  // Takes a batch (a list of kFrameBatch frames) or returns nullptr.
  FreeFrameLink* Take(size_t cls) {
    MutexLock lock(&mu_);
    FreeFrameLink* batch = batches_[cls];
    if (batch == nullptr) return nullptr;
    batches_[cls] = batch->next_batch;
    Poison(batch, cls);
    bytes_ -= kFrameBatch * ClassBytes(cls);
    return batch;
  }
  // Keeps a batch of kFrameBatch frames; false if the depot is full (the
  // caller frees them).
  bool Put(size_t cls, FreeFrameLink* batch) {
    MutexLock lock(&mu_);
    size_t batch_bytes = kFrameBatch * ClassBytes(cls);
    if (bytes_ + batch_bytes > kDepotMaxBytes) return false;
    batch->next_batch = batches_[cls];
    Poison(batch, cls);
    batches_[cls] = batch;
    bytes_ += batch_bytes;
    return true;
  }
  size_t bytes() {
    MutexLock lock(&mu_);
    return bytes_;
  }

 private:
  Mutex mu_;
  FreeFrameLink* batches_[kFrameClasses] ABSL_GUARDED_BY(mu_) = {};
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

// Never destroyed: threads may free frames during static destruction.
Depot& TheDepot() {
  static Depot* depot = new Depot;
  return *depot;
}

void FreeList(FreeFrameLink* f, size_t cls) {
  while (f != nullptr) {
    FreeFrameLink* next = f->next;
    UnpoisonAll(f, cls);
    ::operator delete(f);
    f = next;
  }
}

// One thread's lists. Trivially destructible and zero-initialised, so the
// hot path reads it without a TLS guard; ThreadListsOwner (below) hands the
// lists to the depot when the thread exits.
struct ThreadLists {
  FreeFrameLink* head[kFrameClasses];
  uint32_t count[kFrameClasses];
  bool registered;  // the owner's destructor will run
  bool exiting;     // it ran: bypass the lists from now on
};
thread_local ThreadLists lists;

// Moves the newest kFrameBatch frames of class `cls` off this thread's list
// as one batch.
FreeFrameLink* DetachBatch(size_t cls) {
  FreeFrameLink* batch = lists.head[cls];
  FreeFrameLink* last = batch;
  for (size_t i = 1; i < kFrameBatch; ++i) last = last->next;
  lists.head[cls] = last->next;
  last->next = nullptr;
  lists.count[cls] -= kFrameBatch;
  return batch;
}

struct ThreadListsOwner {
  ~ThreadListsOwner() {
    for (size_t cls = 0; cls < kFrameClasses; ++cls) {
      while (lists.count[cls] >= kFrameBatch) {
        FreeFrameLink* batch = DetachBatch(cls);
        if (!TheDepot().Put(cls, batch)) FreeList(batch, cls);
      }
      FreeList(lists.head[cls], cls);
      lists.head[cls] = nullptr;
      lists.count[cls] = 0;
    }
    lists.exiting = true;
  }
  void Register() {}
};
thread_local ThreadListsOwner lists_owner;

// The first time this thread caches a frame: its lists go to the depot when
// it exits.
void EnsureRegistered() {
  if (lists.registered) return;
  lists_owner.Register();
  lists.registered = true;
}

}  // namespace

// Small frames are always allocated at their class's full size, so any
// thread's list of that class can take them back.
void* AllocateFrame(size_t bytes) {
  const size_t cls = ClassOf(bytes);
  if (cls == kNoClass) return ::operator new(bytes);
  if (lists.exiting) return ::operator new(ClassBytes(cls));
  FreeFrameLink* f = lists.head[cls];
  if (f == nullptr) {
    f = TheDepot().Take(cls);
    if (f == nullptr) return ::operator new(ClassBytes(cls));
    EnsureRegistered();
    lists.count[cls] = kFrameBatch;
  }
  lists.head[cls] = f->next;
  --lists.count[cls];
  UnpoisonAll(f, cls);
  return f;
}

void FreeFrame(void* frame, size_t bytes) noexcept {
  const size_t cls = ClassOf(bytes);
  if (cls == kNoClass || lists.exiting) {
    ::operator delete(frame);
    return;
  }
  EnsureRegistered();
  if (lists.count[cls] >= kFrameLocalMax) {
    FreeFrameLink* batch = DetachBatch(cls);
    if (!TheDepot().Put(cls, batch)) FreeList(batch, cls);
  }
  auto* f = static_cast<FreeFrameLink*>(frame);
  f->next = lists.head[cls];
  Poison(f, cls);
  lists.head[cls] = f;
  ++lists.count[cls];
}

size_t CachedFramesOnThisThread(size_t bytes) {
  const size_t cls = ClassOf(bytes);
  return cls == kNoClass ? 0 : lists.count[cls];
}

size_t DepotBytes() { return TheDepot().bytes(); }

}  // namespace taskq::rt::internal
