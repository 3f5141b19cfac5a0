// An op's scratch arrays carved from one byte buffer: one allocation per call instead of one per array.
#pragma once

#include <cstdint>

namespace qwen3next {

// Bytes `count` objects of T take in a carved buffer: rounded up to 16, so that every array starts vector aligned.
template <typename T>
constexpr int64_t carved_bytes(int64_t count) {
  return (count * int64_t(sizeof(T)) + 15) / 16 * 16;
}

// Carves `count` objects of T from a byte buffer (16-byte aligned itself) and advances the cursor past them.
template <typename T>
T* carve(uint8_t*& cursor, int64_t count) {
  T* p = reinterpret_cast<T*>(cursor);
  cursor += carved_bytes<T>(count);
  return p;
}

}  // namespace qwen3next
