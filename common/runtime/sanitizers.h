// Which sanitizer this translation unit is built with, the same under GCC
// (__SANITIZE_ADDRESS__, __SANITIZE_THREAD__) and clang (__has_feature; clang
// 14 does not define GCC's macros). Compile-time constants only: nothing to
// share between threads.
#ifndef TASKQ_COMMON_RUNTIME_SANITIZERS_H_
#define TASKQ_COMMON_RUNTIME_SANITIZERS_H_

#if defined(__SANITIZE_ADDRESS__)
#define TASKQ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TASKQ_ASAN 1
#endif
#endif

#if defined(__SANITIZE_THREAD__)
#define TASKQ_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TASKQ_TSAN 1
#endif
#endif

namespace taskq {

#ifdef TASKQ_ASAN
inline constexpr bool kUnderAsan = true;
#else
inline constexpr bool kUnderAsan = false;
#endif

#ifdef TASKQ_TSAN
inline constexpr bool kUnderTsan = true;
#else
inline constexpr bool kUnderTsan = false;
#endif

// ASan or TSan: memory and time mean little (quarantine, shadow memory,
// 5-50x slower threads).
inline constexpr bool kUnderSanitizer = kUnderAsan || kUnderTsan;

}  // namespace taskq

#endif  // TASKQ_COMMON_RUNTIME_SANITIZERS_H_
