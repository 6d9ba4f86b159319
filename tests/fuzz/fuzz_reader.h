// FuzzReader: reads a fuzz input front to back in the simple framing the
// seed corpora are written in (tests/fuzz/make_seeds.py): bytes,
// little-endian integers and length-prefixed strings. Past the end every
// read returns zeros or empty strings, so any input decodes.
//
// Thread-safety: none (one input, one thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace taskq::fuzz {

class FuzzReader {
 public:
  FuzzReader(const uint8_t* data, size_t size) : p_(data), n_(size) {}
  bool empty() const { return n_ == 0; }
  uint8_t Byte() {
    if (n_ == 0) return 0;
    --n_;
    return *p_++;
  }
  uint16_t U16() { return static_cast<uint16_t>(Byte() | (Byte() << 8)); }
  uint64_t U64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(Byte()) << (8 * i);
    return v;
  }
  std::string Bytes(size_t k) {
    if (k > n_) k = n_;
    std::string out(reinterpret_cast<const char*>(p_), k);
    p_ += k;
    n_ -= k;
    return out;
  }
  // A string prefixed with its length: one byte, or two with `wide`.
  std::string String(bool wide = false) { return Bytes(wide ? U16() : Byte()); }

 private:
  const uint8_t* p_;
  size_t n_;
};

}  // namespace taskq::fuzz
