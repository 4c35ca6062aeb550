// resource.Quantity as apimachinery parses it: the grammar
//   [+-] digits[.digits] suffix, suffix one of "" m k M G T P E (decimal SI),
//   Ki Mi Gi Ti Pi Ei (binary SI) or e/E followed by a signed integer,
// leading zeros and a bare sign or dot read as zero, the exponent read as a
// 64-bit integer and kept as a 32-bit one (as ParseQuantity's suffixer does),
// magnitudes capped at 2^63-1 and non-zero values rounded away from zero to
// a nano-unit. Errors carry apimachinery's messages word for word, so a
// malformed quantity gets the 400 that kube-apiserver's decoder gives.
#pragma once

#include <string_view>

#include "common/base/result.h"

namespace trellis::kube {

// The messages of apimachinery's ErrFormatWrong, ErrSuffix and ErrNumeric.
inline constexpr std::string_view kQuantityFormatError =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
inline constexpr std::string_view kQuantitySuffixError = "unable to parse quantity's suffix";
inline constexpr std::string_view kQuantityNumericError = "unable to parse numeric part of quantity";

// The quantity's value in units (bytes, cores, ...). Never throws.
base::Result<long double> parseQuantity(std::string_view text);

}  // namespace trellis::kube
