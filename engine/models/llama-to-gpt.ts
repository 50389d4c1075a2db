// Converts a Hugging Face LlamaForCausalLM state dict to our GPT's weights; used by tests today and by HF import (issue 12) next.
//
// Our GPT with pos 'rope', norm 'rmsnorm', mlp 'swiglu', bias false (n_kv_head, tie_embeddings as
// the checkpoint has them) is Llama. Key by key:
//   model.embed_tokens.weight → wte               model.norm.weight → ln_f.weight
//   model.layers.N.input_layernorm → h.N.ln_1      post_attention_layernorm → h.N.ln_2
//   self_attn.{q,k,v}_proj → h.N.attn.c_attn       self_attn.o_proj → h.N.attn.c_proj
//   mlp.{gate,up}_proj → h.N.mlp.c_fc              mlp.down_proj → h.N.mlp.c_proj
//   lm_head.weight → lm_head.weight (untied; wte's copy when the checkpoint ties it)
// HF stores torch Linear weights (out, in) as separate q/k/v and gate/up projections; we store
// GPT-2 Conv1D weights (in, out) fused column-wise: c_attn = [q | k | v], c_fc = [gate | up].

import { gptOptions, type GptConfig } from './gpt';

export interface NamedTensor {
  dims: number[];
  data: Float32Array;
}

/** (rows, cols) row-major → (cols, rows). */
function transpose2(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c];
  return out;
}

/** Concatenates torch (out_i, in) weights along out, transposed to one (in, Σ out_i) Conv1D weight. */
function fuseTransposed(parts: NamedTensor[], nIn: number): Float32Array {
  const outs = parts.map((t) => t.dims[0]);
  const total = outs.reduce((a, b) => a + b, 0);
  const fused = new Float32Array(nIn * total);
  let col = 0;
  for (const t of parts) {
    const tr = transpose2(t.data, t.dims[0], nIn); // (in, out_i)
    for (let r = 0; r < nIn; r++) fused.set(tr.subarray(r * t.dims[0], (r + 1) * t.dims[0]), r * total + col);
    col += t.dims[0];
  }
  return fused;
}

function checkLlamaLayout(cfg: GptConfig): void {
  const v = gptOptions(cfg);
  const bad = [
    v.pos !== 'rope' && `pos '${v.pos}'`,
    v.norm !== 'rmsnorm' && `norm '${v.norm}'`,
    v.mlp !== 'swiglu' && `mlp '${v.mlp}'`,
    cfg.bias && 'bias true',
  ].filter(Boolean);
  if (bad.length) throw new Error(`llama weights need pos 'rope', norm 'rmsnorm', mlp 'swiglu', bias false; config has ${bad.join(', ')}`);
}

/**
 * Our weights from a LlamaForCausalLM state dict (safetensors names). A missing or wrong-shape
 * tensor is an error naming it and `file`.
 * @example const w = llamaToGpt(cfg, readSafetensors(buf, 'model.safetensors').tensors, 'model.safetensors')
 */
export function llamaToGpt(cfg: GptConfig, hf: Map<string, NamedTensor>, file = 'model.safetensors'): Map<string, Float32Array> {
  checkLlamaLayout(cfg);
  const v = gptOptions(cfg);
  const C = cfg.n_embd;
  const kvC = v.nKvHead * (C / cfg.n_head);
  const get = (name: string, dims: number[]): NamedTensor => {
    const t = hf.get(name);
    if (!t) throw new Error(`${file}: tensor "${name}" is missing`);
    if (t.dims.join() !== dims.join()) throw new Error(`${file}: tensor "${name}" is [${t.dims.join(', ')}], expected [${dims.join(', ')}]`);
    if (!(t.data instanceof Float32Array)) throw new Error(`${file}: tensor "${name}" must be float32`);
    return t;
  };
  const out = new Map<string, Float32Array>();
  out.set('wte', get('model.embed_tokens.weight', [cfg.vocab_size, C]).data);
  for (let i = 0; i < cfg.n_layer; i++) {
    const l = `model.layers.${i}`;
    const h = `h.${i}`;
    out.set(`${h}.ln_1.weight`, get(`${l}.input_layernorm.weight`, [C]).data);
    out.set(`${h}.ln_2.weight`, get(`${l}.post_attention_layernorm.weight`, [C]).data);
    const qkv = [get(`${l}.self_attn.q_proj.weight`, [C, C]), get(`${l}.self_attn.k_proj.weight`, [kvC, C]), get(`${l}.self_attn.v_proj.weight`, [kvC, C])];
    out.set(`${h}.attn.c_attn.weight`, fuseTransposed(qkv, C)); // (C, C + 2·kvC)
    out.set(`${h}.attn.c_proj.weight`, transpose2(get(`${l}.self_attn.o_proj.weight`, [C, C]).data, C, C)); // (C, C)
    const gu = [get(`${l}.mlp.gate_proj.weight`, [v.nInner, C]), get(`${l}.mlp.up_proj.weight`, [v.nInner, C])];
    out.set(`${h}.mlp.c_fc.weight`, fuseTransposed(gu, C)); // (C, 2H)
    out.set(`${h}.mlp.c_proj.weight`, transpose2(get(`${l}.mlp.down_proj.weight`, [C, v.nInner]).data, C, v.nInner)); // (H, C)
  }
  out.set('ln_f.weight', get('model.norm.weight', [C]).data);
  if (!v.tie) out.set('lm_head.weight', (hf.get('lm_head.weight') ? get('lm_head.weight', [cfg.vocab_size, C]) : get('model.embed_tokens.weight', [cfg.vocab_size, C])).data);
  return out;
}
