// Weight quantizers: pure functions from a float (K, N) matrix to the integer codes, scales and
// zero points each ONNX kernel expects. Kept apart from the graph rewriting so they can be checked
// element by element against the dequantization formula.

/** Symmetric per-output-channel int8: W[k, n] ≈ q[k, n] · scale[n], q in [−qmax, qmax]. */
export interface Int8Weights {
  q: Int8Array; // (K, N)
  scale: Float32Array; // (N)
}

/**
 * Per-channel symmetric int8 (zero point 0). `reduceRange` uses 7 bits (±63), which keeps
 * u8·s8 pair sums inside int16 on AVX2 cores without VNNI.
 */
export function quantizeInt8PerChannel(W: Float32Array, K: number, N: number, reduceRange = false): Int8Weights {
  const qmax = reduceRange ? 63 : 127;
  const scale = new Float32Array(N);
  for (let n = 0; n < N; n++) {
    let m = 0;
    for (let k = 0; k < K; k++) m = Math.max(m, Math.abs(W[k * N + n]));
    scale[n] = m > 0 ? m / qmax : 1;
  }
  const q = new Int8Array(K * N);
  for (let k = 0; k < K; k++) {
    for (let n = 0; n < N; n++) q[k * N + n] = Math.max(-qmax, Math.min(qmax, Math.round(W[k * N + n] / scale[n])));
  }
  return { q, scale };
}

/**
 * com.microsoft.MatMulNBits 4-bit layout (ORT 1.30): B uint8 (N, kBlocks, blockSize/2), codes
 * along K two per byte, low nibble first; scales float (N, kBlocks); zero points uint8
 * (N, ceil(kBlocks/2)), low nibble first, or absent (implicit 8). W ≈ (code − zp) · scale.
 */
export interface Int4Weights {
  packed: Uint8Array;
  scales: Float32Array;
  zeroPoints: Uint8Array | null;
  kBlocks: number;
  blob: number;
}

export function quantizeInt4Blocks(W: Float32Array, K: number, N: number, blockSize: number, symmetric: boolean): Int4Weights {
  if (blockSize < 16 || (blockSize & (blockSize - 1)) !== 0) throw new Error(`int4: blockSize must be a power of two ≥ 16, got ${blockSize}`);
  const kBlocks = Math.ceil(K / blockSize);
  const blob = blockSize / 2;
  const packed = new Uint8Array(N * kBlocks * blob);
  const scales = new Float32Array(N * kBlocks);
  const zpRow = Math.ceil(kBlocks / 2);
  const zeroPoints = symmetric ? null : new Uint8Array(N * zpRow);
  const codes = new Uint8Array(blockSize);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < kBlocks; b++) {
      const k0 = b * blockSize;
      const k1 = Math.min(K, k0 + blockSize);
      let lo = 0;
      let hi = 0;
      for (let k = k0; k < k1; k++) {
        const w = W[k * N + n];
        lo = Math.min(lo, w);
        hi = Math.max(hi, w);
      }
      let scale: number;
      let zp: number;
      if (symmetric) {
        // Codes 0..15 around 8 give −8..7. A signed scale (extreme / −8, as ORT's own blockwise
        // quantizer does) puts the largest-magnitude weight exactly on −8 whatever its sign.
        const extreme = -lo >= hi ? lo : hi;
        scale = extreme !== 0 ? extreme / -8 : 1;
        zp = 8;
      } else {
        scale = hi > lo ? (hi - lo) / 15 : 1;
        zp = Math.max(0, Math.min(15, Math.round(-lo / scale)));
      }
      scale = Math.fround(scale);
      scales[n * kBlocks + b] = scale;
      codes.fill(zp); // padding past K decodes to exactly 0
      for (let k = k0; k < k1; k++) codes[k - k0] = Math.max(0, Math.min(15, Math.round(W[k * N + n] / scale) + zp));
      const base = (n * kBlocks + b) * blob;
      for (let i = 0; i < blob; i++) packed[base + i] = codes[2 * i] | (codes[2 * i + 1] << 4);
      if (zeroPoints) zeroPoints[n * zpRow + (b >> 1)] |= (b & 1) === 0 ? zp : zp << 4;
    }
  }
  return { packed, scales, zeroPoints, kBlocks, blob };
}

/** The float (K, N) matrix MatMulNBits computes with, from the packed form (for tests and error reports). */
export function dequantizeInt4Blocks(w: Int4Weights, K: number, N: number, blockSize: number): Float32Array {
  const out = new Float32Array(K * N);
  const zpRow = Math.ceil(w.kBlocks / 2);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const b = Math.floor(k / blockSize);
      const i = k - b * blockSize;
      const byte = w.packed[(n * w.kBlocks + b) * w.blob + (i >> 1)];
      const code = (i & 1) === 0 ? byte & 15 : byte >> 4;
      const zpByte = w.zeroPoints ? w.zeroPoints[n * zpRow + (b >> 1)] : 8;
      const zp = w.zeroPoints ? ((b & 1) === 0 ? zpByte & 15 : zpByte >> 4) : 8;
      out[k * N + n] = (code - zp) * w.scales[n * w.kBlocks + b];
    }
  }
  return out;
}

/**
 * A frozen LoRA base in 4 bits, stored twice for MatMulNBits (engine/lora/quantized-base.ts): W
 * (K, N) for the forward, blocks along K, and Wᵀ (N, K) for the input gradient, blocks along N.
 * Square tiles of `blockSize × blockSize` share one scale (and zero point), so both copies hold
 * the same codes and dequantize to exactly the same matrix: the backward is the exact gradient of
 * the quantized forward. A tile's scale is coarser than a per-column block's (one per blockSize²
 * weights instead of blockSize), which is the price of an exact transpose.
 */
export interface Int4Tiles {
  /** W (K, N) as MatMulNBits B: (N, ceil(K/bs), bs/2). */
  forward: Int4Weights;
  /** Wᵀ (N, K) as MatMulNBits B: (K, ceil(N/bs), bs/2). */
  transposed: Int4Weights;
}

export function quantizeInt4Tiles(W: Float32Array, K: number, N: number, blockSize: number, symmetric: boolean): Int4Tiles {
  if (blockSize < 16 || (blockSize & (blockSize - 1)) !== 0) throw new Error(`int4: blockSize must be a power of two ≥ 16, got ${blockSize}`);
  if (W.length !== K * N) throw new Error(`int4: ${W.length} weights for a ${K}×${N} matrix`);
  const [kT, nT] = [Math.ceil(K / blockSize), Math.ceil(N / blockSize)];
  const tileScale = new Float32Array(kT * nT);
  const tileZp = new Uint8Array(kT * nT);
  for (let tk = 0; tk < kT; tk++) {
    for (let tn = 0; tn < nT; tn++) {
      let lo = 0;
      let hi = 0;
      for (let k = tk * blockSize; k < Math.min(K, (tk + 1) * blockSize); k++) {
        for (let n = tn * blockSize; n < Math.min(N, (tn + 1) * blockSize); n++) {
          lo = Math.min(lo, W[k * N + n]);
          hi = Math.max(hi, W[k * N + n]);
        }
      }
      // The same rule as quantizeInt4Blocks: symmetric puts the extreme weight on code 0 (−8);
      // asymmetric spans [lo, hi] with 16 codes and a rounded zero point.
      let scale: number;
      let zp = 8;
      if (symmetric) {
        const extreme = -lo >= hi ? lo : hi;
        scale = extreme !== 0 ? extreme / -8 : 1;
      } else {
        scale = hi > lo ? (hi - lo) / 15 : 1;
        zp = Math.max(0, Math.min(15, Math.round(-lo / scale)));
      }
      tileScale[tk * nT + tn] = Math.fround(scale);
      tileZp[tk * nT + tn] = zp;
    }
  }
  const code = (k: number, n: number) => {
    const t = Math.floor(k / blockSize) * nT + Math.floor(n / blockSize);
    return Math.max(0, Math.min(15, Math.round(W[k * N + n] / tileScale[t]) + tileZp[t]));
  };
  // rows × cols of the stored matrix (cols = the MatMulNBits K, blocked); at(r, c) reads W or Wᵀ.
  const pack = (rows: number, cols: number, at: (r: number, c: number) => number, tile: (r: number, b: number) => number): Int4Weights => {
    const kBlocks = Math.ceil(cols / blockSize);
    const blob = blockSize / 2;
    const packed = new Uint8Array(rows * kBlocks * blob);
    const scales = new Float32Array(rows * kBlocks);
    const zpRow = Math.ceil(kBlocks / 2);
    const zeroPoints = symmetric ? null : new Uint8Array(rows * zpRow);
    for (let r = 0; r < rows; r++) {
      for (let b = 0; b < kBlocks; b++) {
        const t = tile(r, b);
        scales[r * kBlocks + b] = tileScale[t];
        if (zeroPoints) zeroPoints[r * zpRow + (b >> 1)] |= (b & 1) === 0 ? tileZp[t] : tileZp[t] << 4;
        const base = (r * kBlocks + b) * blob;
        for (let i = 0; i < blockSize; i++) {
          const c = b * blockSize + i;
          const v = c < cols ? at(r, c) : tileZp[t]; // padding past the end decodes to exactly 0
          packed[base + (i >> 1)] |= (i & 1) === 0 ? v : v << 4;
        }
      }
    }
    return { packed, scales, zeroPoints, kBlocks, blob };
  };
  return {
    forward: pack(N, K, (n, k) => code(k, n), (n, b) => b * nT + Math.floor(n / blockSize)),
    transposed: pack(K, N, (k, n) => code(k, n), (k, b) => Math.floor(k / blockSize) * nT + b),
  };
}
