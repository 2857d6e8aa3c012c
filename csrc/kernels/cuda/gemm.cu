// nvcc build of kernels/cuda/gemm.cuh (the emulator build includes it from emu.cpp).
#include "kernels/cuda/gemm.cuh"
