// nvcc build of kernels/cuda/matvec.cuh (the emulator build includes it from emu.cpp).
#include "kernels/cuda/matvec.cuh"
