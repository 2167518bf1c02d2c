/*
 * npu-sim: a cycle-approximate simulator of our NPU instruction set.
 *
 * Why C: the compiled model calls npu_exec() for every op placed on the NPU,
 * with the instruction program the compiler emitted and the DRAM tensors; the
 * simulator executes it for real (bit-exact int8 -> int32, fp16 -> fp32 with
 * fp16 rounding of the operands) and advances per-core timelines so the
 * reported cycles reflect DMA/compute overlap, not just an instruction count.
 *
 * Build: linked into every exported npu-sim model (.so) with hidden visibility
 * (so two loaded models never share counters), and built once as a shared
 * library with default visibility for in-process JIT execution.
 *
 * Instruction format: 16 x int32 words; w[0] = opcode, w[1] = core.
 * The full encoding is documented in docs/npu.md and tvm_autoglm/npu/isa.py.
 */
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef NPU_HIDDEN
#define NPU_INTERNAL __attribute__((visibility("hidden")))
#else
#define NPU_INTERNAL
#endif
#define NPU_EXPORT __attribute__((visibility("default")))

#define NPU_WORDS 16
#define NPU_MAX_CORES 16
#define NPU_MAX_OPS 4096
#define NPU_TILE 16
#define NPU_GRANULE 256 /* scoreboard granularity in bytes */
#define NPU_MAX_DEPTH 8 /* block route: rotating input/weight buffers */

enum { SP_INP = 0, SP_WGT = 1, SP_ACC = 2, SP_COUNT = 3 };
enum { OP_CONFIG = 1, OP_LOAD = 2, OP_STORE = 3, OP_GEMM = 4, OP_VALU = 5, OP_SYNC = 6 };
enum { DT_INT8 = 0, DT_FP32 = 1, DT_INT32 = 2, DT_FP16 = 3 };
enum { MODE_INT8 = 0, MODE_FP16 = 1 };
enum {
  ALU_ADD = 0, ALU_MUL = 1, ALU_MAX = 2, ALU_MIN = 3, ALU_ADDI = 4, ALU_MULI = 5, ALU_RELU = 6,
  ALU_CLIP = 7, ALU_EXP = 8, ALU_GELU = 9, ALU_RSUM = 10, ALU_RMAX = 11, ALU_SHR = 12, ALU_GELU_TANH = 13,
  ALU_COUNT = 14
};

/* Counters readable from Python (layout mirrored in tvm_autoglm/npu/counters.py). */
typedef struct {
  int64_t op_id, calls, cycles, macs, macs_issued, gemm_cycles, valu_cycles;
  int64_t dma_bytes[SP_COUNT + 1]; /* inp, wgt, acc loads; [3] = stores */
  int64_t m, n, k, batch, cores;
} npu_op_stats;

typedef struct {
  int64_t version, errors, ops_executed, total_cycles, macs, macs_issued;
  int64_t dma_bytes[SP_COUNT + 1];
  int64_t peak_bytes[SP_COUNT];
  int64_t num_ops; /* distinct op ids seen */
  int64_t insns;
  npu_op_stats ops[NPU_MAX_OPS];
} npu_counters;

typedef struct {
  int64_t t_load, t_comp, t_store;
  int64_t *ready[SP_COUNT], *freed[SP_COUNT];
  int8_t *inp_i8, *wgt_i8;
  float *inp_f, *wgt_f; /* fp16 values held exactly in float */
  int32_t *acc_i;       /* aliased as float for fp16 mode */
} npu_core;

/* Per-op configuration set by the CONFIG instruction. */
typedef struct {
  int op_id, mode, cores;
  int gemm_lat, vec_lat, dma_setup, sync_lat, bpc, total_bpc;
  int64_t sp_bytes[SP_COUNT];
  int64_t m, n, k, batch;
} npu_cfg;

NPU_INTERNAL npu_counters npu_g_counters = {.version = 1};
static npu_core g_cores[NPU_MAX_CORES];
static int64_t g_alloc_bytes[SP_COUNT];
/* One simulator per library: models served from several threads take turns. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---------- fp16 emulation (round to nearest even, with subnormals) ---------- */
static uint16_t f32_to_f16(float value) {
  uint32_t x;
  memcpy(&x, &value, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  int32_t exp = (int32_t)((x >> 23) & 0xff);
  uint32_t mant = x & 0x7fffffu;
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
  int32_t e = exp - 127 + 15;
  if (e >= 0x1f) return (uint16_t)(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return (uint16_t)sign;
    mant |= 0x800000u;
    uint32_t shift = (uint32_t)(14 - e);
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) half++;
    return (uint16_t)(sign | half);
  }
  uint32_t half = sign | ((uint32_t)e << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) half++;
  return (uint16_t)half;
}

static float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {
      int e = -1;
      do { mant <<= 1; e++; } while (!(mant & 0x400u));
      x = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float out;
  memcpy(&out, &x, 4);
  return out;
}

static float round_f16(float v) { return f16_to_f32(f32_to_f16(v)); }

/* ---------- helpers ---------- */
static int64_t dt_size(int dt) { return dt == DT_INT8 ? 1 : dt == DT_FP16 ? 2 : 4; }
static int64_t sp_elem_bytes(int sp, int mode) { return sp == SP_ACC ? 4 : (mode == MODE_INT8 ? 1 : 2); }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static double dram_read(const void *base, int dt, int64_t idx) {
  switch (dt) {
    case DT_INT8: return ((const int8_t *)base)[idx];
    case DT_INT32: return ((const int32_t *)base)[idx];
    case DT_FP16: return f16_to_f32(((const uint16_t *)base)[idx]);
    default: return ((const float *)base)[idx];
  }
}

static int ensure_alloc(const npu_cfg *cfg) {
  for (int sp = 0; sp < SP_COUNT; ++sp) {
    if (cfg->sp_bytes[sp] <= g_alloc_bytes[sp]) continue;
    int64_t bytes = cfg->sp_bytes[sp];
    int64_t granules = ceil_div(bytes, NPU_GRANULE);
    for (int c = 0; c < NPU_MAX_CORES; ++c) {
      npu_core *core = &g_cores[c];
      free(core->ready[sp]);
      free(core->freed[sp]);
      core->ready[sp] = calloc((size_t)granules, sizeof(int64_t));
      core->freed[sp] = calloc((size_t)granules, sizeof(int64_t));
      if (sp == SP_INP) {
        free(core->inp_i8); free(core->inp_f);
        core->inp_i8 = calloc((size_t)bytes, 1);
        core->inp_f = calloc((size_t)bytes, sizeof(float));
      } else if (sp == SP_WGT) {
        free(core->wgt_i8); free(core->wgt_f);
        core->wgt_i8 = calloc((size_t)bytes, 1);
        core->wgt_f = calloc((size_t)bytes, sizeof(float));
      } else {
        free(core->acc_i);
        core->acc_i = calloc((size_t)ceil_div(bytes, 4), sizeof(int32_t));
      }
      if (!core->ready[sp] || !core->freed[sp]) return -1;
    }
    g_alloc_bytes[sp] = bytes;
  }
  return 0;
}

/* Scoreboard over [off, off+bytes) of scratchpad sp: latest write / latest read. */
static int64_t sb_max(int64_t *arr, int64_t off, int64_t bytes) {
  int64_t t = 0;
  for (int64_t g = off / NPU_GRANULE; g <= (off + bytes - 1) / NPU_GRANULE; ++g) t = max64(t, arr[g]);
  return t;
}
static void sb_set(int64_t *arr, int64_t off, int64_t bytes, int64_t t) {
  for (int64_t g = off / NPU_GRANULE; g <= (off + bytes - 1) / NPU_GRANULE; ++g) arr[g] = max64(arr[g], t);
}

static int check_range(const npu_cfg *cfg, int sp, int64_t off_bytes, int64_t bytes) {
  if (sp < 0 || sp >= SP_COUNT || off_bytes < 0 || bytes <= 0 || off_bytes + bytes > cfg->sp_bytes[sp]) return -1;
  if (off_bytes + bytes > npu_g_counters.peak_bytes[sp]) npu_g_counters.peak_bytes[sp] = off_bytes + bytes;
  return 0;
}

static int64_t dma_cycles(const npu_cfg *cfg, int64_t bytes) {
  int64_t bpc = cfg->bpc;
  if (cfg->total_bpc > 0 && cfg->cores > 0 && cfg->total_bpc / cfg->cores < bpc) bpc = cfg->total_bpc / cfg->cores;
  if (bpc < 1) bpc = 1;
  return cfg->dma_setup + ceil_div(bytes, bpc);
}

static npu_op_stats *op_stats(int op_id) {
  if (op_id < 0 || op_id >= NPU_MAX_OPS) op_id = NPU_MAX_OPS - 1;
  npu_op_stats *s = &npu_g_counters.ops[op_id];
  s->op_id = op_id;
  if (op_id + 1 > npu_g_counters.num_ops) npu_g_counters.num_ops = op_id + 1;
  return s;
}

static double gelu_tanh(double x) {
  double inner = 0.7978845608028654 * (x + 0.044715 * x * x * x);
  return 0.5 * x * (1.0 + tanh(inner));
}

static double gelu_erf(double x) { return 0.5 * x * (1.0 + erf(x * 0.7071067811865476)); }

/* ---------- instruction execution ---------- */
static int exec_load(const npu_cfg *cfg, npu_core *core, const int32_t *w, void **dram, int timing_only, npu_op_stats *st) {
  int sp = w[2];
  int64_t spad_off = w[3], slot = w[4], dram_off = w[5], rows = w[6], cols = w[7], dstride = w[8];
  int64_t vrows = w[9], vcols = w[10], sstride = w[11];
  int dt = w[12];
  if (slot < 0 || slot > 3 || rows <= 0 || cols <= 0 || vrows > rows || vcols > cols) return -1;
  int64_t esz = sp_elem_bytes(sp, cfg->mode);
  int64_t span = ((rows - 1) * sstride + cols) * esz;
  if (check_range(cfg, sp, spad_off * esz, span)) return -1;
  if (!timing_only) {
    const void *base = dram[slot];
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        int64_t s = spad_off + r * sstride + c;
        int valid = r < vrows && c < vcols;
        double v = valid ? dram_read(base, dt, dram_off + r * dstride + c) : 0.0;
        if (sp == SP_INP) {
          if (cfg->mode == MODE_INT8) core->inp_i8[s] = (int8_t)v; else core->inp_f[s] = round_f16((float)v);
        } else if (sp == SP_WGT) {
          if (cfg->mode == MODE_INT8) core->wgt_i8[s] = (int8_t)v; else core->wgt_f[s] = round_f16((float)v);
        } else if (cfg->mode == MODE_INT8) {
          core->acc_i[s] = (int32_t)v;
        } else {
          float f = (float)v;
          memcpy(&core->acc_i[s], &f, 4);
        }
      }
    }
  }
  int64_t bytes = vrows * vcols * dt_size(dt); /* padding is generated on chip, not transferred */
  int64_t start = max64(core->t_load, max64(sb_max(core->freed[sp], spad_off * esz, span), sb_max(core->ready[sp], spad_off * esz, span)));
  int64_t end = start + dma_cycles(cfg, bytes);
  sb_set(core->ready[sp], spad_off * esz, span, end);
  core->t_load = end;
  st->dma_bytes[sp] += bytes;
  npu_g_counters.dma_bytes[sp] += bytes;
  return 0;
}

static int exec_store(const npu_cfg *cfg, npu_core *core, const int32_t *w, void **dram, int timing_only, npu_op_stats *st) {
  int64_t spad_off = w[3], slot = w[4], dram_off = w[5], rows = w[6], cols = w[7], dstride = w[8], sstride = w[9];
  int dt = w[10];
  if (w[2] != SP_ACC || slot < 0 || slot > 3 || rows <= 0 || cols <= 0) return -1;
  int64_t span = ((rows - 1) * sstride + cols) * 4;
  if (check_range(cfg, SP_ACC, spad_off * 4, span)) return -1;
  if (!timing_only) {
    void *base = dram[slot];
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        int32_t raw = core->acc_i[spad_off + r * sstride + c];
        int64_t d = dram_off + r * dstride + c;
        float f;
        memcpy(&f, &raw, 4);
        double v = cfg->mode == MODE_INT8 ? (double)raw : (double)f;
        switch (dt) {
          case DT_INT32: ((int32_t *)base)[d] = cfg->mode == MODE_INT8 ? raw : (int32_t)v; break;
          case DT_INT8: ((int8_t *)base)[d] = (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v); break;
          case DT_FP16: ((uint16_t *)base)[d] = f32_to_f16((float)v); break;
          default: ((float *)base)[d] = (float)v;
        }
      }
    }
  }
  int64_t bytes = rows * cols * dt_size(dt);
  int64_t start = max64(core->t_store, sb_max(core->ready[SP_ACC], spad_off * 4, span));
  int64_t end = start + dma_cycles(cfg, bytes);
  sb_set(core->freed[SP_ACC], spad_off * 4, span, end);
  core->t_store = end;
  st->dma_bytes[SP_COUNT] += bytes;
  npu_g_counters.dma_bytes[SP_COUNT] += bytes;
  return 0;
}

static int exec_gemm(const npu_cfg *cfg, npu_core *core, const int32_t *w, int timing_only, npu_op_stats *st) {
  int64_t acc_off = w[2], inp_off = w[3], wgt_off = w[4], mt = w[5], nt = w[6], kt = w[7];
  int reset = w[8];
  int64_t is = w[9], ws = w[10], as = w[11];
  int64_t um = w[12], un = w[13], uk = w[14];
  if (mt <= 0 || nt <= 0 || kt <= 0) return -1;
  int64_t M = mt * NPU_TILE, N = nt * NPU_TILE, K = kt * NPU_TILE;
  int64_t ie = sp_elem_bytes(SP_INP, cfg->mode), we = sp_elem_bytes(SP_WGT, cfg->mode);
  int64_t ispan = ((M - 1) * is + K) * ie, wspan = ((K - 1) * ws + N) * we, aspan = ((M - 1) * as + N) * 4;
  if (check_range(cfg, SP_INP, inp_off * ie, ispan) || check_range(cfg, SP_WGT, wgt_off * we, wspan) ||
      check_range(cfg, SP_ACC, acc_off * 4, aspan))
    return -1;
  if (!timing_only) {
    if (cfg->mode == MODE_INT8) {
      for (int64_t i = 0; i < M; ++i) {
        int32_t *arow = core->acc_i + acc_off + i * as;
        if (reset) memset(arow, 0, (size_t)N * 4);
        const int8_t *irow = core->inp_i8 + inp_off + i * is;
        for (int64_t k = 0; k < K; ++k) {
          int32_t a = irow[k];
          if (!a) continue;
          const int8_t *wrow = core->wgt_i8 + wgt_off + k * ws;
          for (int64_t j = 0; j < N; ++j) arow[j] += a * (int32_t)wrow[j];
        }
      }
    } else {
      for (int64_t i = 0; i < M; ++i) {
        float *arow = (float *)(core->acc_i + acc_off + i * as);
        if (reset) memset(arow, 0, (size_t)N * 4);
        const float *irow = core->inp_f + inp_off + i * is;
        for (int64_t k = 0; k < K; ++k) {
          float a = irow[k];
          if (a == 0.0f) continue;
          const float *wrow = core->wgt_f + wgt_off + k * ws;
          for (int64_t j = 0; j < N; ++j) arow[j] += a * wrow[j];
        }
      }
    }
  }
  int64_t cycles = mt * nt * kt * cfg->gemm_lat;
  int64_t start = core->t_comp;
  start = max64(start, sb_max(core->ready[SP_INP], inp_off * ie, ispan));
  start = max64(start, sb_max(core->ready[SP_WGT], wgt_off * we, wspan));
  start = max64(start, sb_max(core->ready[SP_ACC], acc_off * 4, aspan));
  start = max64(start, sb_max(core->freed[SP_ACC], acc_off * 4, aspan));
  int64_t end = start + cycles;
  sb_set(core->freed[SP_INP], inp_off * ie, ispan, end);
  sb_set(core->freed[SP_WGT], wgt_off * we, wspan, end);
  sb_set(core->ready[SP_ACC], acc_off * 4, aspan, end);
  core->t_comp = end;
  int64_t useful = um * un * uk;
  st->macs += useful;
  st->macs_issued += M * N * K;
  st->gemm_cycles += cycles;
  npu_g_counters.macs += useful;
  npu_g_counters.macs_issued += M * N * K;
  return 0;
}

static int exec_valu(const npu_cfg *cfg, npu_core *core, const int32_t *w, int timing_only, npu_op_stats *st) {
  int op = w[2];
  int64_t dst = w[3], src = w[4], rows = w[5], cols = w[6], dstride = w[7], sstride = w[10];
  float imm0, imm1;
  memcpy(&imm0, &w[8], 4);
  memcpy(&imm1, &w[9], 4);
  if (op < 0 || op >= ALU_COUNT || rows <= 0 || cols <= 0) return -1;
  int fp = cfg->mode == MODE_FP16;
  if ((op == ALU_EXP || op == ALU_GELU || op == ALU_GELU_TANH) && !fp) return -1;
  int64_t dspan = ((rows - 1) * dstride + cols) * 4, sspan = ((rows - 1) * sstride + cols) * 4;
  if (check_range(cfg, SP_ACC, dst * 4, dspan) || check_range(cfg, SP_ACC, src * 4, sspan)) return -1;
  if (!timing_only) {
    float *af = (float *)core->acc_i;
    int32_t *ai = core->acc_i;
    for (int64_t r = 0; r < rows; ++r) {
      if (op == ALU_RSUM || op == ALU_RMAX) {
        double accum = op == ALU_RSUM ? 0.0 : -INFINITY;
        int64_t iacc = op == ALU_RSUM ? 0 : INT32_MIN;
        for (int64_t c = 0; c < cols; ++c) {
          int64_t s = src + r * sstride + c;
          if (fp) accum = op == ALU_RSUM ? accum + af[s] : fmax(accum, af[s]);
          else iacc = op == ALU_RSUM ? iacc + ai[s] : (ai[s] > iacc ? ai[s] : iacc);
        }
        if (fp) af[dst + r * dstride] = (float)accum; else ai[dst + r * dstride] = (int32_t)iacc;
        continue;
      }
      for (int64_t c = 0; c < cols; ++c) {
        int64_t d = dst + r * dstride + c, s = src + r * sstride + c;
        if (fp) {
          float x = af[d], y = af[s], out = x;
          switch (op) {
            case ALU_ADD: out = x + y; break;
            case ALU_MUL: out = x * y; break;
            case ALU_MAX: out = x > y ? x : y; break;
            case ALU_MIN: out = x < y ? x : y; break;
            case ALU_ADDI: out = x + imm0; break;
            case ALU_MULI: out = x * imm0; break;
            case ALU_RELU: out = x > 0 ? x : 0; break;
            case ALU_CLIP: out = x < imm0 ? imm0 : x > imm1 ? imm1 : x; break;
            case ALU_EXP: out = (float)exp((double)x); break;
            case ALU_GELU: out = (float)gelu_erf((double)x); break;
            case ALU_GELU_TANH: out = (float)gelu_tanh((double)x); break;
            default: return -1;
          }
          af[d] = out;
        } else {
          int32_t x = ai[d], y = ai[s], out = x;
          int32_t i0 = w[8], i1 = w[9];
          switch (op) {
            case ALU_ADD: out = x + y; break;
            case ALU_MUL: out = x * y; break;
            case ALU_MAX: out = x > y ? x : y; break;
            case ALU_MIN: out = x < y ? x : y; break;
            case ALU_ADDI: out = x + i0; break;
            case ALU_MULI: out = x * i0; break;
            case ALU_RELU: out = x > 0 ? x : 0; break;
            case ALU_CLIP: out = x < i0 ? i0 : x > i1 ? i1 : x; break;
            case ALU_SHR: out = i0 > 0 ? (int32_t)(((int64_t)x + ((int64_t)1 << (i0 - 1))) >> i0) : x; break;
            default: return -1;
          }
          ai[d] = out;
        }
      }
    }
  }
  int64_t factor = (op == ALU_EXP || op == ALU_GELU || op == ALU_GELU_TANH) ? 4 : 1;
  int64_t cycles = rows * ceil_div(cols, NPU_TILE) * cfg->vec_lat * factor;
  int64_t start = max64(core->t_comp, max64(sb_max(core->ready[SP_ACC], src * 4, sspan), sb_max(core->ready[SP_ACC], dst * 4, dspan)));
  start = max64(start, sb_max(core->freed[SP_ACC], dst * 4, dspan));
  int64_t end = start + cycles;
  sb_set(core->ready[SP_ACC], dst * 4, dspan, end);
  sb_set(core->freed[SP_ACC], src * 4, sspan, end);
  core->t_comp = end;
  st->valu_cycles += cycles;
  return 0;
}

static int64_t core_time(const npu_core *c) { return max64(c->t_load, max64(c->t_comp, c->t_store)); }

static void exec_sync(const npu_cfg *cfg) {
  int64_t t = 0;
  for (int c = 0; c < cfg->cores; ++c) t = max64(t, core_time(&g_cores[c]));
  t += cfg->sync_lat;
  for (int c = 0; c < cfg->cores; ++c) g_cores[c].t_load = g_cores[c].t_comp = g_cores[c].t_store = t;
}

static void reset_timelines(void) {
  for (int c = 0; c < NPU_MAX_CORES; ++c) {
    npu_core *core = &g_cores[c];
    core->t_load = core->t_comp = core->t_store = 0;
    for (int sp = 0; sp < SP_COUNT; ++sp) {
      int64_t granules = ceil_div(g_alloc_bytes[sp], NPU_GRANULE);
      if (core->ready[sp]) memset(core->ready[sp], 0, (size_t)granules * sizeof(int64_t));
      if (core->freed[sp]) memset(core->freed[sp], 0, (size_t)granules * sizeof(int64_t));
    }
  }
}

/* Runs one op's program. Returns the op's cycles, or a negative error code. */
static int64_t run_program(const int32_t *prog, int32_t n_insns, void **dram, int timing_only) {
  if (n_insns <= 0 || prog[0] != OP_CONFIG) return -1;
  const int32_t *w = prog;
  npu_cfg cfg = {
      .op_id = w[1], .mode = w[2], .cores = w[3], .gemm_lat = w[4], .vec_lat = w[5], .dma_setup = w[6],
      .sync_lat = w[7], .bpc = w[8], .total_bpc = w[9], .sp_bytes = {w[10], w[11], w[12]},
      .m = w[13], .n = w[14], .k = w[15],
  };
  if (cfg.cores < 1 || cfg.cores > NPU_MAX_CORES) return -2;
  if (ensure_alloc(&cfg)) return -3;
  reset_timelines();
  npu_op_stats scratch;
  memset(&scratch, 0, sizeof scratch);
  npu_op_stats *st = timing_only ? &scratch : op_stats(cfg.op_id);
  npu_counters saved;
  if (timing_only) memcpy(&saved, &npu_g_counters, offsetof(npu_counters, ops));
  int64_t batch = 1;
  for (int32_t i = 1; i < n_insns; ++i) {
    w = prog + (int64_t)i * NPU_WORDS;
    int core_id = w[1];
    if (core_id < 0 || core_id >= cfg.cores) return -4;
    npu_core *core = &g_cores[core_id];
    int rc = 0;
    switch (w[0]) {
      case OP_LOAD: rc = exec_load(&cfg, core, w, dram, timing_only, st); break;
      case OP_STORE: rc = exec_store(&cfg, core, w, dram, timing_only, st); break;
      case OP_GEMM: rc = exec_gemm(&cfg, core, w, timing_only, st); break;
      case OP_VALU: rc = exec_valu(&cfg, core, w, timing_only, st); break;
      case OP_SYNC: exec_sync(&cfg); break;
      case OP_CONFIG: batch = w[2]; break; /* extension word: batch count of this op */
      default: rc = -1;
    }
    if (rc) return -100 - i;
  }
  exec_sync(&cfg);
  int64_t cycles = core_time(&g_cores[0]);
  if (timing_only) {
    memcpy(&npu_g_counters, &saved, offsetof(npu_counters, ops));
    return cycles;
  }
  st->calls += 1;
  st->cycles += cycles;
  st->m = cfg.m; st->n = cfg.n; st->k = cfg.k; st->batch = batch; st->cores = cfg.cores;
  npu_g_counters.total_cycles += cycles;
  npu_g_counters.ops_executed += 1;
  npu_g_counters.insns += n_insns;
  return cycles;
}

/* Entry point called by compiled models (T.call_extern). */
NPU_INTERNAL int32_t npu_exec(const int32_t *prog, int32_t n_insns, void *a0, void *a1, void *a2, void *a3) {
  void *dram[4] = {a0, a1, a2, a3};
  pthread_mutex_lock(&g_lock);
  int64_t rc = run_program(prog, n_insns, dram, 0);
  if (rc < 0) npu_g_counters.errors += 1;
  pthread_mutex_unlock(&g_lock);
  if (rc < 0) {
    fprintf(stderr, "npu-sim: program error %lld (op %d)\n", (long long)rc, n_insns > 0 ? prog[1] : -1);
    return (int32_t)rc;
  }
  return 0;
}

/* One 16x16x16 tile, C += A x B, for the TensorIntrin route (tvm_autoglm/npu/tensorize.py):
 * A, B, C are strided DRAM tiles (row strides lda/ldb/ldc in elements). Each call is a whole
 * op for the timing model -- load A, B and C, GEMM, store C, sync -- on the default machine,
 * so nothing overlaps across tiles: the comparison point for the program route. */
NPU_INTERNAL int32_t npu_gemm_tile(const void *a, const void *b, void *c, int32_t lda, int32_t ldb, int32_t ldc, int32_t fp, int32_t op_id) {
  int32_t prog[6][NPU_WORDS];
  memset(prog, 0, sizeof prog);
  int in_dt = fp ? DT_FP32 : DT_INT8, acc_dt = fp ? DT_FP32 : DT_INT32;
  int32_t cfg[NPU_WORDS] = {OP_CONFIG, op_id, fp ? MODE_FP16 : MODE_INT8, 1, 16, 1, 20, 4, 32, 256, 32768, 262144, 131072, 16, 16, 16};
  int32_t ld_a[NPU_WORDS] = {OP_LOAD, 0, SP_INP, 0, 0, 0, 16, 16, lda, 16, 16, 16, in_dt};
  int32_t ld_b[NPU_WORDS] = {OP_LOAD, 0, SP_WGT, 0, 1, 0, 16, 16, ldb, 16, 16, 16, in_dt};
  int32_t ld_c[NPU_WORDS] = {OP_LOAD, 0, SP_ACC, 0, 2, 0, 16, 16, ldc, 16, 16, 16, acc_dt};
  int32_t gemm[NPU_WORDS] = {OP_GEMM, 0, 0, 0, 0, 1, 1, 1, 0, 16, 16, 16, 16, 16, 16};
  int32_t st_c[NPU_WORDS] = {OP_STORE, 0, SP_ACC, 0, 3, 0, 16, 16, ldc, 16, acc_dt};
  memcpy(prog[0], cfg, sizeof cfg);
  memcpy(prog[1], ld_a, sizeof cfg);
  memcpy(prog[2], ld_b, sizeof cfg);
  memcpy(prog[3], ld_c, sizeof cfg);
  memcpy(prog[4], gemm, sizeof cfg);
  memcpy(prog[5], st_c, sizeof cfg);
  return npu_exec(&prog[0][0], 6, (void *)a, (void *)b, c, c);
}

/* ---------- the block route (tvm_autoglm/npu/tensorize.py) ----------
 * A model kernel tensorized with the block route's intrinsics calls
 *   npu_block_begin(cfg)                 once per op: machine + op header, timelines reset
 *   per output block (n-major: batch, n, m):
 *     npu_acc_zero / npu_acc_bias(...)   init intrinsic: the block's accumulator on chip -- zero (no
 *                                        instruction: its first GEMM resets) or the bias row broadcast (one LOAD)
 *     npu_gemm_block(A, B, C, ...)       once per k step: C[bm,bn] += A[bm,bk] x B[bk,bn]
 *     npu_block_act(D, ...)              epilogue intrinsic (ops with an activation): VALU + STORE
 *   npu_block_end(op_id)                 once per op: final SYNC, the op's cycles counted
 * Between the calls of one op the per-core engine timelines and the scoreboard persist,
 * so the loads of the next block overlap the GEMM of the previous one exactly as
 * asynchronous DMA hardware does: each block call becomes LOAD A, LOAD B into the next of
 * `depth` rotating input/weight buffers (B skipped when that panel is still resident), one
 * GEMM (mt x nt x kt tiles, accumulating), and STORE C on the last k step unless the op has
 * an epilogue; C stays in one of two accumulator buffers across k. A first k step whose block
 * no init intrinsic set up loads C from DRAM (the intrinsic's C += A x B taken literally).
 * The block's core is a fixed function of its output coordinates: blocks are split into
 * contiguous runs, one per core (the program route's split).
 * cfg: 32 words = a CONFIG instruction (as isa.Program.config) and its extension
 * {CONFIG, 0, batch, bm, bn, bk, depth, a/b/c dtypes, bias, activation ALU code, B batched}.
 * The session holds the simulator lock from begin to end, so concurrent model threads take
 * turns per op. */
typedef struct {
  int active, error, timing_only;
  npu_cfg cfg;
  int64_t bm, bn, bk, depth, mt, nt, kt, n_m, n_n, nblocks, insns;
  int64_t inp_slot, wgt_slot, acc_slot;
  int a_dt, b_dt, c_dt; /* DRAM dtypes of A, B and C (isa.DT_*) */
  int has_bias, act, b_batched; /* op epilogue: bias init, activation (ALU code, 0 = none) */
  int inp_next[NPU_MAX_CORES], wgt_next[NPU_MAX_CORES], acc_next[NPU_MAX_CORES], acc_cur[NPU_MAX_CORES];
  /* accumulator state per core: the output block (C element offset) the init intrinsic set up on chip, whether
   * its first GEMM resets it (zero init), and whether its result still waits for the epilogue intrinsic */
  int64_t acc_block[NPU_MAX_CORES];
  int reset_pending[NPU_MAX_CORES], epi_pending[NPU_MAX_CORES];
  int64_t wgt_key[NPU_MAX_CORES][NPU_MAX_DEPTH]; /* B element offset of the panel resident in each weight buffer */
  npu_op_stats *st, scratch;
  npu_counters saved;
} npu_session;

static npu_session g_sess;

static int64_t block_begin_locked(const int32_t *w, int timing_only) {
  npu_session *s = &g_sess;
  memset(s, 0, offsetof(npu_session, saved));
  s->st = &s->scratch;
  if (w[0] != OP_CONFIG || w[NPU_WORDS] != OP_CONFIG) return -1;
  npu_cfg cfg = {
      .op_id = w[1], .mode = w[2], .cores = w[3], .gemm_lat = w[4], .vec_lat = w[5], .dma_setup = w[6],
      .sync_lat = w[7], .bpc = w[8], .total_bpc = w[9], .sp_bytes = {w[10], w[11], w[12]},
      .m = w[13], .n = w[14], .k = w[15], .batch = w[NPU_WORDS + 2],
  };
  const int32_t *x = w + NPU_WORDS;
  s->cfg = cfg;
  s->bm = x[3]; s->bn = x[4]; s->bk = x[5]; s->depth = x[6];
  s->a_dt = x[7]; s->b_dt = x[8]; s->c_dt = x[9];
  s->has_bias = x[10]; s->act = x[11]; s->b_batched = x[12];
  if (s->act && s->act != ALU_RELU && s->act != ALU_GELU && s->act != ALU_GELU_TANH) return -2;
  if ((s->act == ALU_GELU || s->act == ALU_GELU_TANH) && cfg.mode != MODE_FP16) return -2;
  for (int c = 0; c < NPU_MAX_CORES; ++c) {
    s->acc_block[c] = -1;
    for (int d = 0; d < NPU_MAX_DEPTH; ++d) s->wgt_key[c][d] = -1;
  }
  if (cfg.cores < 1 || cfg.cores > NPU_MAX_CORES || s->bm <= 0 || s->bn <= 0 || s->bk <= 0 || s->depth < 1 || s->depth > NPU_MAX_DEPTH ||
      cfg.m % s->bm || cfg.n % s->bn || cfg.k % s->bk || cfg.batch < 1)
    return -2;
  s->mt = ceil_div(s->bm, NPU_TILE); s->nt = ceil_div(s->bn, NPU_TILE); s->kt = ceil_div(s->bk, NPU_TILE);
  s->inp_slot = s->mt * s->kt * NPU_TILE * NPU_TILE;
  s->wgt_slot = s->kt * s->nt * NPU_TILE * NPU_TILE;
  s->acc_slot = s->mt * s->nt * NPU_TILE * NPU_TILE;
  int64_t esz = cfg.mode == MODE_INT8 ? 1 : 2;
  if (s->depth * s->inp_slot * esz > cfg.sp_bytes[SP_INP] || s->depth * s->wgt_slot * esz > cfg.sp_bytes[SP_WGT] ||
      2 * s->acc_slot * 4 > cfg.sp_bytes[SP_ACC])
    return -3; /* the block does not fit the scratchpads at this depth */
  if (ensure_alloc(&s->cfg)) return -4;
  reset_timelines();
  s->n_m = cfg.m / s->bm; s->n_n = cfg.n / s->bn;
  s->nblocks = cfg.batch * s->n_m * s->n_n;
  s->timing_only = timing_only;
  if (timing_only) {
    memcpy(&s->saved, &npu_g_counters, offsetof(npu_counters, ops));
  } else {
    s->st = op_stats(cfg.op_id);
  }
  s->insns = 2;
  s->active = 1;
  return 0;
}

static int block_core(const npu_session *s, int64_t idx) {
  for (int c = 0; c < s->cfg.cores; ++c)
    if (idx < s->nblocks * (c + 1) / s->cfg.cores) return c;
  return s->cfg.cores - 1;
}

/* The output block's core, from its element offset in C (blocks n-major: batch, n, m). */
static int block_core_of(const npu_session *s, int64_t c_off, int64_t bm, int64_t bn) {
  const npu_cfg *cfg = &s->cfg;
  int64_t ni = c_off % cfg->n, mi = (c_off / cfg->n) % cfg->m, bi = c_off / (cfg->n * cfg->m);
  if (mi % bm || ni % bn || bi >= cfg->batch) return -1;
  return block_core(s, (bi * s->n_n + ni / bn) * s->n_m + mi / bm);
}

/* Init intrinsic: the output block at c_off starts on chip. bias == NULL (and not timing-only with a bias
 * op): zero, no instruction -- the block's first GEMM runs with reset. Otherwise one LOAD of the bias row
 * broadcast over the block's rows (DRAM row stride 0), the program route's bias load. */
static int block_init(npu_session *s, const void *bias, int64_t c_off, int64_t ldc, int64_t bm, int64_t bn, int with_bias) {
  const npu_cfg *cfg = &s->cfg;
  if (!s->active) return -1;
  if (bm != s->bm || bn != s->bn || ldc != cfg->n || with_bias != s->has_bias) return -2;
  int core_id = block_core_of(s, c_off, bm, bn);
  if (core_id < 0) return -3;
  npu_core *core = &g_cores[core_id];
  s->acc_cur[core_id] = s->acc_next[core_id];
  s->acc_next[core_id] ^= 1;
  s->acc_block[core_id] = c_off;
  s->epi_pending[core_id] = 0;
  int64_t MP = s->mt * NPU_TILE, NP = s->nt * NPU_TILE;
  if (!with_bias) {
    s->reset_pending[core_id] = 1;
    return 0;
  }
  s->reset_pending[core_id] = 0;
  void *dram[4] = {NULL, NULL, (void *)bias, NULL};
  int32_t w[NPU_WORDS] = {OP_LOAD, core_id, SP_ACC, (int32_t)(s->acc_cur[core_id] * s->acc_slot), 2, 0, (int32_t)MP, (int32_t)NP, 0,
                          (int32_t)MP, (int32_t)bn, (int32_t)NP, s->c_dt};
  if (exec_load(cfg, core, w, dram, s->timing_only, s->st)) return -4;
  s->insns++;
  return 0;
}

/* One block call: a_off / b_off / c_off are the element offsets of the A, B and C blocks in their tensors. */
static int block_step(npu_session *s, void *a, void *b, void *c, int64_t a_off, int64_t b_off, int64_t c_off, int64_t lda, int64_t ldb,
                      int64_t ldc, int64_t bm, int64_t bn, int64_t bk) {
  const npu_cfg *cfg = &s->cfg;
  if (!s->active) return -1;
  if (bm != s->bm || bn != s->bn || bk != s->bk || lda != cfg->k || ldc != cfg->n || ldb != cfg->n) return -2;
  int64_t ki = a_off % cfg->k;
  if (ki % bk) return -3;
  int core_id = block_core_of(s, c_off, bm, bn);
  if (core_id < 0) return -3;
  npu_core *core = &g_cores[core_id];
  int first = ki == 0, last = ki + bk >= cfg->k;
  int a_dt = s->a_dt, b_dt = s->b_dt, acc_dt = s->c_dt;
  void *dram[4] = {a, b, c, c};
  int64_t MP = s->mt * NPU_TILE, NP = s->nt * NPU_TILE, KP = s->kt * NPU_TILE;
  int32_t w[NPU_WORDS];
  int reset = 0;
  if (first && s->acc_block[core_id] == c_off) {
    reset = s->reset_pending[core_id]; /* the init intrinsic set this block up on chip */
    s->reset_pending[core_id] = 0;
  } else if (first) {
    /* no init intrinsic ran for this block: C += A x B reads the C that is in DRAM */
    s->acc_cur[core_id] = s->acc_next[core_id];
    s->acc_next[core_id] ^= 1;
    s->acc_block[core_id] = c_off;
    int32_t ld_c[NPU_WORDS] = {OP_LOAD, core_id, SP_ACC, (int32_t)(s->acc_cur[core_id] * s->acc_slot), 2, 0,
                               (int32_t)MP, (int32_t)NP, (int32_t)ldc, (int32_t)bm, (int32_t)bn, (int32_t)NP, acc_dt};
    memcpy(w, ld_c, sizeof w);
    if (exec_load(cfg, core, w, dram, s->timing_only, s->st)) return -4;
    s->insns++;
  } else if (s->acc_block[core_id] != c_off) {
    return -9; /* a later k step of a block that is not the one in the accumulator */
  }
  int64_t acc_off = s->acc_cur[core_id] * s->acc_slot;
  int64_t inp_off = s->inp_next[core_id] * s->inp_slot;
  s->inp_next[core_id] = (int)((s->inp_next[core_id] + 1) % s->depth);
  int32_t ld_a[NPU_WORDS] = {OP_LOAD, core_id, SP_INP, (int32_t)inp_off, 0, 0, (int32_t)MP, (int32_t)KP, (int32_t)lda,
                             (int32_t)bm, (int32_t)bk, (int32_t)KP, a_dt};
  memcpy(w, ld_a, sizeof w);
  if (exec_load(cfg, core, w, dram, s->timing_only, s->st)) return -5;
  /* weight reuse: a B panel still resident in one of the weight buffers is not loaded again */
  int hit = -1;
  for (int d = 0; d < s->depth; ++d)
    if (s->wgt_key[core_id][d] == b_off) hit = d;
  if (hit < 0) {
    hit = s->wgt_next[core_id];
    s->wgt_next[core_id] = (int)((s->wgt_next[core_id] + 1) % s->depth);
    int32_t ld_b[NPU_WORDS] = {OP_LOAD, core_id, SP_WGT, (int32_t)(hit * s->wgt_slot), 1, 0, (int32_t)KP, (int32_t)NP, (int32_t)ldb,
                               (int32_t)bk, (int32_t)bn, (int32_t)NP, b_dt};
    memcpy(w, ld_b, sizeof w);
    if (exec_load(cfg, core, w, dram, s->timing_only, s->st)) return -6;
    s->wgt_key[core_id][hit] = b_off;
    s->insns++;
  }
  int64_t wgt_off = hit * s->wgt_slot;
  int32_t gemm[NPU_WORDS] = {OP_GEMM, core_id, (int32_t)acc_off, (int32_t)inp_off, (int32_t)wgt_off, (int32_t)s->mt,
                             (int32_t)s->nt, (int32_t)s->kt, reset, (int32_t)KP, (int32_t)NP, (int32_t)NP,
                             (int32_t)bm, (int32_t)bn, (int32_t)bk};
  memcpy(w, gemm, sizeof w);
  if (exec_gemm(cfg, core, w, s->timing_only, s->st)) return -7;
  s->insns += 2;
  if (last && s->act) {
    s->epi_pending[core_id] = 1; /* the epilogue intrinsic applies the activation and stores */
  } else if (last) {
    int32_t st_c[NPU_WORDS] = {OP_STORE, core_id, SP_ACC, (int32_t)acc_off, 3, 0, (int32_t)bm, (int32_t)bn, (int32_t)ldc,
                               (int32_t)NP, acc_dt};
    memcpy(w, st_c, sizeof w);
    if (exec_store(cfg, core, w, dram, s->timing_only, s->st)) return -8;
    s->insns++;
  }
  return 0;
}

/* Epilogue intrinsic: D = act(C) for the output block at c_off, whose C is still in the accumulator:
 * one VALU (the program route's activation) and the STORE into D. */
static int block_epilogue(npu_session *s, void *d, int64_t c_off, int64_t ldd, int64_t bm, int64_t bn, int act) {
  const npu_cfg *cfg = &s->cfg;
  if (!s->active) return -1;
  if (bm != s->bm || bn != s->bn || ldd != cfg->n || act != s->act || !act) return -2;
  int core_id = block_core_of(s, c_off, bm, bn);
  if (core_id < 0) return -3;
  if (s->acc_block[core_id] != c_off || !s->epi_pending[core_id]) return -4; /* its last k step has not run */
  s->epi_pending[core_id] = 0;
  npu_core *core = &g_cores[core_id];
  int64_t acc_off = s->acc_cur[core_id] * s->acc_slot, MP = s->mt * NPU_TILE, NP = s->nt * NPU_TILE;
  void *dram[4] = {NULL, NULL, NULL, d};
  int32_t valu[NPU_WORDS] = {OP_VALU, core_id, act, (int32_t)acc_off, (int32_t)acc_off, (int32_t)MP, (int32_t)NP, (int32_t)NP, 0, 0, (int32_t)NP};
  if (exec_valu(cfg, core, valu, s->timing_only, s->st)) return -5;
  int32_t st_c[NPU_WORDS] = {OP_STORE, core_id, SP_ACC, (int32_t)acc_off, 3, 0, (int32_t)bm, (int32_t)bn, (int32_t)ldd, (int32_t)NP, s->c_dt};
  if (exec_store(cfg, core, st_c, dram, s->timing_only, s->st)) return -6;
  s->insns += 2;
  return 0;
}

static int64_t block_end_locked(void) {
  npu_session *s = &g_sess;
  if (!s->active) return -1;
  s->active = 0;
  if (s->timing_only && s->st == &s->scratch) memcpy(&npu_g_counters, &s->saved, offsetof(npu_counters, ops));
  if (s->error) return s->error;
  for (int c = 0; c < s->cfg.cores; ++c)
    if (s->epi_pending[c]) return -5; /* a block's epilogue (activation + store) never ran: its output was not stored */
  exec_sync(&s->cfg);
  int64_t cycles = core_time(&g_cores[0]);
  if (s->timing_only) return cycles;
  npu_op_stats *st = s->st;
  st->calls += 1;
  st->cycles += cycles;
  st->m = s->cfg.m; st->n = s->cfg.n; st->k = s->cfg.k; st->batch = s->cfg.batch; st->cores = s->cfg.cores;
  npu_g_counters.total_cycles += cycles;
  npu_g_counters.ops_executed += 1;
  npu_g_counters.insns += s->insns;
  return cycles;
}

/* Entry points called by compiled models (T.call_extern). The lock is held from begin to end. */
NPU_INTERNAL int32_t npu_block_begin(const int32_t *cfg) {
  pthread_mutex_lock(&g_lock);
  int64_t rc = block_begin_locked(cfg, 0);
  if (rc < 0) {
    g_sess.active = 1; /* keep the session so npu_block_end releases the lock and reports */
    g_sess.error = (int)rc;
  }
  return (int32_t)rc;
}

NPU_INTERNAL int32_t npu_gemm_block(void *a, void *b, void *c, int64_t a_off, int64_t b_off, int64_t c_off, int32_t lda, int32_t ldb,
                                    int32_t ldc, int32_t bm, int32_t bn, int32_t bk) {
  if (g_sess.error) return g_sess.error;
  int rc = block_step(&g_sess, a, b, c, a_off, b_off, c_off, lda, ldb, ldc, bm, bn, bk);
  if (rc) g_sess.error = -200 + rc;
  return rc;
}

/* Init intrinsics (decompose_reduction's init block): zero, or the bias row broadcast. */
NPU_INTERNAL int32_t npu_acc_zero(int64_t c_off, int32_t ldc, int32_t bm, int32_t bn) {
  if (g_sess.error) return g_sess.error;
  int rc = block_init(&g_sess, NULL, c_off, ldc, bm, bn, 0);
  if (rc) g_sess.error = -300 + rc;
  return rc;
}

NPU_INTERNAL int32_t npu_acc_bias(const void *bias, int64_t c_off, int32_t ldc, int32_t bm, int32_t bn) {
  if (g_sess.error) return g_sess.error;
  int rc = block_init(&g_sess, bias, c_off, ldc, bm, bn, 1);
  if (rc) g_sess.error = -300 + rc;
  return rc;
}

/* Epilogue intrinsic: activation (ALU code) on the accumulator block, then its STORE. */
NPU_INTERNAL int32_t npu_block_act(void *d, int64_t c_off, int32_t ldd, int32_t bm, int32_t bn, int32_t act) {
  if (g_sess.error) return g_sess.error;
  int rc = block_epilogue(&g_sess, d, c_off, ldd, bm, bn, act);
  if (rc) g_sess.error = -400 + rc;
  return rc;
}

NPU_INTERNAL int32_t npu_block_end(int32_t op_id) {
  int64_t rc = block_end_locked();
  if (rc < 0) npu_g_counters.errors += 1;
  pthread_mutex_unlock(&g_lock);
  if (rc < 0) {
    fprintf(stderr, "npu-sim: block op error %lld (op %d)\n", (long long)rc, op_id);
    return (int32_t)rc;
  }
  return 0;
}

/* Cycles of a whole block-route op, replaying the tensorized kernel's call order (batch, n
 * blocks, m blocks, k steps) in timing-only mode: the block route's tile search and tuner
 * cost (tests check it equals the cycles a compiled tensorized kernel counts). */
NPU_EXPORT int64_t npu_time_blocks(const int32_t *cfg) {
  pthread_mutex_lock(&g_lock);
  int64_t rc = block_begin_locked(cfg, 1);
  if (rc == 0) {
    npu_session *s = &g_sess;
    int64_t M = s->cfg.m, N = s->cfg.n, K = s->cfg.k;
    for (int64_t bi = 0; bi < s->cfg.batch && !rc; ++bi)
      for (int64_t ni = 0; ni < N && !rc; ni += s->bn)
        for (int64_t mi = 0; mi < M && !rc; mi += s->bm) {
          int64_t c_off = bi * M * N + mi * N + ni;
          rc = block_init(s, NULL, c_off, N, s->bm, s->bn, s->has_bias);
          for (int64_t ki = 0; ki < K && !rc; ki += s->bk)
            rc = block_step(s, NULL, NULL, NULL, bi * M * K + mi * K + ki, (s->b_batched ? bi * K * N : 0) + ki * N + ni, c_off, K, N, N,
                            s->bm, s->bn, s->bk);
          if (!rc && s->act) rc = block_epilogue(s, NULL, c_off, N, s->bm, s->bn, s->act);
        }
    if (rc) { s->error = (int)(-200 + rc); }
    rc = block_end_locked();
  }
  g_sess.active = 0;
  pthread_mutex_unlock(&g_lock);
  return rc;
}

/* Direct block-route entry points for tests (the model's own are hidden in an exported .so). */
NPU_EXPORT int32_t npu_block_begin_exported(const int32_t *cfg) { return npu_block_begin(cfg); }
NPU_EXPORT int32_t npu_gemm_block_exported(void *a, void *b, void *c, int64_t a_off, int64_t b_off, int64_t c_off, int32_t lda,
                                           int32_t ldb, int32_t ldc, int32_t bm, int32_t bn, int32_t bk) {
  return npu_gemm_block(a, b, c, a_off, b_off, c_off, lda, ldb, ldc, bm, bn, bk);
}
NPU_EXPORT int32_t npu_block_end_exported(int32_t op_id) { return npu_block_end(op_id); }

/* Cycle count of a program without touching data or counters: the tile search's cost. */
NPU_EXPORT int64_t npu_time_program(const int32_t *prog, int32_t n_insns) {
  void *dram[4] = {0, 0, 0, 0};
  pthread_mutex_lock(&g_lock);
  int64_t rc = run_program(prog, n_insns, dram, 1);
  pthread_mutex_unlock(&g_lock);
  return rc;
}

/* Direct execution for tests and tools (the same entry the model uses, exported). */
NPU_EXPORT int32_t npu_exec_exported(const int32_t *prog, int32_t n_insns, void *a0, void *a1, void *a2, void *a3) {
  return npu_exec(prog, n_insns, a0, a1, a2, a3);
}

NPU_EXPORT npu_counters *npu_counters_ptr(void) { return &npu_g_counters; }
NPU_EXPORT int64_t npu_counters_size(void) { return (int64_t)sizeof(npu_counters); }
NPU_EXPORT int64_t npu_max_ops(void) { return NPU_MAX_OPS; }

NPU_EXPORT void npu_counters_reset(void) {
  pthread_mutex_lock(&g_lock);
  memset(&npu_g_counters, 0, sizeof npu_g_counters);
  npu_g_counters.version = 1;
  pthread_mutex_unlock(&g_lock);
}

/* TVM FFI entry points, so a loaded model module answers
 * module.get_function("npu_counters_address") without knowing the file path
 * (a .glm is unpacked to a temporary name). ABI: tvm/ffi/c_api.h (TVMFFIAny
 * is 16 bytes: int32 type index, 4 bytes padding, 8-byte payload; int = 1). */
typedef struct {
  int32_t type_index;
  uint32_t padding;
  int64_t v_int64;
} npu_ffi_any;

NPU_EXPORT int __tvm_ffi_npu_counters_address(void *self, const npu_ffi_any *args, int32_t num_args, npu_ffi_any *result) {
  (void)self; (void)args; (void)num_args;
  result->type_index = 1;
  result->padding = 0;
  result->v_int64 = (int64_t)(intptr_t)&npu_g_counters;
  return 0;
}

NPU_EXPORT int __tvm_ffi_npu_counters_reset(void *self, const npu_ffi_any *args, int32_t num_args, npu_ffi_any *result) {
  (void)self; (void)args; (void)num_args;
  npu_counters_reset();
  result->type_index = 0; /* None */
  result->padding = 0;
  result->v_int64 = 0;
  return 0;
}
