// fmt's compiled part, built into trellis-cni from the header the fmt
// package ships for this purpose (format-inl.h), so the plugin loads neither
// libfmt.so nor, through it, libstdc++.so: it is exec'd once per pod ADD and
// DEL, and each shared library costs that exec loading and relocation time.
// With --as-needed the linker then leaves libfmt.so out (see CMakeLists.txt).
#include <fmt/format-inl.h>

// The templates format.h declares extern (locale-dependent separators),
// instantiated for char: the only character type the plugin formats.
FMT_BEGIN_NAMESPACE
namespace detail {
template auto thousands_sep_impl<char>(locale_ref) -> thousands_sep_result<char>;
template auto decimal_point_impl<char>(locale_ref) -> char;
}  // namespace detail
FMT_END_NAMESPACE
