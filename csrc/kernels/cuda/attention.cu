// nvcc build of kernels/cuda/attention.cuh (the emulator build includes it from emu.cpp).
#include "kernels/cuda/attention.cuh"
