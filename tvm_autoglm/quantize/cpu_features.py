"""CPU feature names the precision modes ask a target about (a leaf module: quantize's package and its
modes import it)."""

BF16_FEATURE = "avx512bf16"
