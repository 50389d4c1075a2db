// LlamaForCausalLM and MistralForCausalLM ⇄ our GPT with pos 'rope', norm 'rmsnorm', mlp 'swiglu'
// (n_kv_head, tie_embeddings and bias as the config says). HF stores torch Linear weights (out, in)
// as separate q/k/v and gate/up projections; we store Conv1D weights (in, out) fused column-wise:
//   model.embed_tokens.weight → wte                 model.norm.weight → ln_f.weight
//   model.layers.N.input_layernorm → h.N.ln_1       post_attention_layernorm → h.N.ln_2
//   self_attn.{q,k,v}_proj → h.N.attn.c_attn = [q | k | v]ᵀ     self_attn.o_proj → h.N.attn.c_proj
//   mlp.{gate,up}_proj → h.N.mlp.c_fc = [gate | up]ᵀ            mlp.down_proj → h.N.mlp.c_proj
//   lm_head.weight → lm_head.weight (untied head only)
// Qwen2 is refused before it gets here: it has biases on q/k/v only, and our GPT has biases on
// every linear layer or on none.

import type { TensorData } from '../graph/ir';
import { explicitGptConfig, gptOptions, GptConfigSchema } from '../models/gpt';
import { EngineError } from '../errors';
import { HfConfigReader, type HfGptArch, type SpecialTokenIds } from './config-keys';
import type { HfFolder } from './folder';

/** (rows, cols) row-major → (cols, rows). */
export function transpose2(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c]!;
  return out;
}

/** torch (out_i, in) weights → one Conv1D (in, Σ out_i) weight, columns in order. */
function fuseTransposed(parts: Float32Array[], outs: number[], nIn: number): Float32Array {
  const total = outs.reduce((a, b) => a + b, 0);
  const fused = new Float32Array(nIn * total);
  let col = 0;
  parts.forEach((w, p) => {
    const nOut = outs[p]!;
    for (let o = 0; o < nOut; o++) for (let i = 0; i < nIn; i++) fused[i * total + col + o] = w[o * nIn + i]!;
    col += nOut;
  });
  return fused;
}

/** The inverse of fuseTransposed: a Conv1D (in, Σ out_i) weight → torch (out_i, in) weights. */
function splitTransposed(fused: Float32Array, outs: number[], nIn: number): Float32Array[] {
  const total = outs.reduce((a, b) => a + b, 0);
  let col = 0;
  return outs.map((nOut) => {
    const w = new Float32Array(nOut * nIn);
    for (let o = 0; o < nOut; o++) for (let i = 0; i < nIn; i++) w[o * nIn + i] = fused[i * total + col + o]!;
    col += nOut;
    return w;
  });
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function splitFlat(v: Float32Array, sizes: number[]): Float32Array[] {
  let at = 0;
  return sizes.map((n) => v.slice(at, (at += n)));
}

/** The rope base θ of a config, from v5's rope_parameters or v4's rope_theta / rope_scaling. */
function ropeTheta(r: HfConfigReader): number {
  // transformers v4 writes rope_scaling (null when unscaled); v5 reads it too, so it is checked whatever else is there.
  const scaling = r.json.rope_scaling;
  if (scaling !== undefined && scaling !== null) {
    const type = (scaling as Record<string, unknown>).rope_type ?? (scaling as Record<string, unknown>).type;
    if (type !== 'default') r.refuse('rope_scaling', 'scaled rotary embeddings (linear, dynamic, yarn, llama3, ...) are not supported; our RoPE is unscaled');
  }
  const params = r.json.rope_parameters;
  if (params !== undefined && params !== null) {
    if (typeof params !== 'object' || Array.isArray(params)) r.refuse('rope_parameters', 'expected an object');
    const p = params as Record<string, unknown>;
    const type = p.rope_type ?? p.type ?? 'default';
    if (type !== 'default') r.refuse('rope_parameters', `rope_type "${String(type)}" scales the rotary frequencies; our RoPE is the unscaled ('default') one`);
    const extra = Object.keys(p).filter((k) => !['rope_type', 'type', 'rope_theta'].includes(k));
    if (extra.length && !(extra.length === 1 && extra[0] === 'partial_rotary_factor' && p.partial_rotary_factor === 1)) {
      r.refuse('rope_parameters', `${extra.join(', ')} change the rotary embedding; our RoPE rotates the whole head with base rope_theta only`);
    }
    const theta = p.rope_theta ?? r.json.rope_theta ?? 10000;
    if (typeof theta !== 'number' || !(theta > 0)) r.refuse('rope_parameters', 'rope_theta must be a positive number');
    return theta;
  }
  return r.num('rope_theta', 10000);
}

export const llama: HfGptArch = {
  architecture: 'LlamaForCausalLM',

  configFromHf(json, where) {
    const r = new HfConfigReader(json, where);
    r.oneOf('hidden_act', 'silu', ['silu'], 'our SwiGLU MLP gates with silu');
    const C = r.int('hidden_size', 4096);
    const nHead = r.int('num_attention_heads', 32);
    const blockSize = r.int('max_position_embeddings', 2048);
    if (r.has('head_dim') && r.int('head_dim') * nHead !== C) {
      r.refuse('head_dim', `our attention's head size is hidden_size / num_attention_heads = ${C / nHead}`);
    }
    const attnBias = r.bool('attention_bias', false);
    const mlpBias = r.bool('mlp_bias', false);
    if (attnBias !== mlpBias) {
      r.refuse(attnBias ? 'attention_bias' : 'mlp_bias', `our GPT has biases on every linear layer or on none; here attention_bias ${attnBias}, mlp_bias ${mlpBias}`);
    }
    r.oneOf('attention_dropout', 0, [0], 'attention dropout alone is not an option of our GPT (its dropout covers embeddings and residuals too)');
    // Mistral: a window shorter than the context changes which keys a query sees.
    const window = r.json.sliding_window;
    if (window !== undefined && window !== null && !(typeof window === 'number' && window >= blockSize)) {
      r.refuse('sliding_window', `a sliding window shorter than max_position_embeddings (${blockSize}) is not supported; our attention is fully causal`);
    }
    const cfg = {
      vocab_size: r.int('vocab_size', 32000),
      block_size: blockSize,
      n_layer: r.int('num_hidden_layers', 32),
      n_head: nHead,
      n_embd: C,
      bias: attnBias,
      pos: 'rope',
      rope_theta: ropeTheta(r),
      norm: 'rmsnorm',
      norm_eps: r.num('rms_norm_eps', 1e-6),
      mlp: 'swiglu',
      n_inner: r.int('intermediate_size', 11008),
      n_kv_head: r.int('num_key_value_heads', nHead),
      dropout: 0,
      tie_embeddings: r.bool('tie_word_embeddings', false),
    };
    const parsed = GptConfigSchema.safeParse(cfg);
    if (!parsed.success) throw new EngineError('config', `${where}: ${parsed.error.issues[0]!.path.join('.')}: ${parsed.error.issues[0]!.message}`);
    return explicitGptConfig(parsed.data);
  },

  readWeights(cfg, folder: HfFolder, onTensor) {
    const o = gptOptions(cfg);
    const C = cfg.n_embd;
    const kvC = o.nKvHead * (C / cfg.n_head);
    const H = o.nInner;
    const used = new Set<string>();
    const get = (name: string, dims: number[]) => {
      const t = folder.tensor(name, dims).data;
      used.add(name);
      onTensor?.(name);
      return t;
    };
    const weights = new Map<string, Float32Array>();
    weights.set('wte', get('model.embed_tokens.weight', [cfg.vocab_size, C]));
    for (let i = 0; i < cfg.n_layer; i++) {
      const l = `model.layers.${i}`;
      const h = `h.${i}`;
      weights.set(`${h}.ln_1.weight`, get(`${l}.input_layernorm.weight`, [C]));
      weights.set(`${h}.ln_2.weight`, get(`${l}.post_attention_layernorm.weight`, [C]));
      const qkv = [get(`${l}.self_attn.q_proj.weight`, [C, C]), get(`${l}.self_attn.k_proj.weight`, [kvC, C]), get(`${l}.self_attn.v_proj.weight`, [kvC, C])];
      weights.set(`${h}.attn.c_attn.weight`, fuseTransposed(qkv, [C, kvC, kvC], C)); // (C, C + 2·kvC)
      weights.set(`${h}.attn.c_proj.weight`, transpose2(get(`${l}.self_attn.o_proj.weight`, [C, C]), C, C)); // (C, C)
      const gu = [get(`${l}.mlp.gate_proj.weight`, [H, C]), get(`${l}.mlp.up_proj.weight`, [H, C])];
      weights.set(`${h}.mlp.c_fc.weight`, fuseTransposed(gu, [H, H], C)); // (C, 2H)
      weights.set(`${h}.mlp.c_proj.weight`, transpose2(get(`${l}.mlp.down_proj.weight`, [C, H]), C, H)); // (H, C)
      if (cfg.bias) {
        weights.set(`${h}.attn.c_attn.bias`, concat([get(`${l}.self_attn.q_proj.bias`, [C]), get(`${l}.self_attn.k_proj.bias`, [kvC]), get(`${l}.self_attn.v_proj.bias`, [kvC])]));
        weights.set(`${h}.attn.c_proj.bias`, get(`${l}.self_attn.o_proj.bias`, [C]));
        weights.set(`${h}.mlp.c_fc.bias`, concat([get(`${l}.mlp.gate_proj.bias`, [H]), get(`${l}.mlp.up_proj.bias`, [H])]));
        weights.set(`${h}.mlp.c_proj.bias`, get(`${l}.mlp.down_proj.bias`, [C]));
      }
    }
    weights.set('ln_f.weight', get('model.norm.weight', [C]));
    if (!o.tie) weights.set('lm_head.weight', get('lm_head.weight', [cfg.vocab_size, C]));
    else if (folder.has('lm_head.weight')) used.add('lm_head.weight'); // the tied copy, when a writer kept it
    return { weights, used };
  },

  configToHf(cfg, tokens: SpecialTokenIds) {
    const o = gptOptions(cfg);
    if (o.pos !== 'rope' || o.norm !== 'rmsnorm' || o.mlp !== 'swiglu') {
      throw new EngineError('config', `LlamaForCausalLM needs pos 'rope', norm 'rmsnorm', mlp 'swiglu'; this model has pos '${o.pos}', norm '${o.norm}', mlp '${o.mlp}'`);
    }
    return {
      model_type: 'llama',
      architectures: ['LlamaForCausalLM'],
      vocab_size: cfg.vocab_size,
      hidden_size: cfg.n_embd,
      intermediate_size: o.nInner,
      num_hidden_layers: cfg.n_layer,
      num_attention_heads: cfg.n_head,
      num_key_value_heads: o.nKvHead,
      head_dim: cfg.n_embd / cfg.n_head,
      hidden_act: 'silu',
      max_position_embeddings: cfg.block_size,
      rms_norm_eps: o.normEps,
      rope_theta: o.ropeTheta,
      rope_parameters: { rope_type: 'default', rope_theta: o.ropeTheta },
      attention_bias: cfg.bias,
      mlp_bias: cfg.bias,
      // Our dropout is a training-only setting; Llama's config has no place for residual dropout.
      attention_dropout: 0,
      pretraining_tp: 1,
      tie_word_embeddings: o.tie,
      bos_token_id: tokens.bos,
      eos_token_id: tokens.eos,
      ...(tokens.pad != null ? { pad_token_id: tokens.pad } : {}),
      torch_dtype: 'float32',
    };
  },

  weightsToHf(cfg, weights) {
    const o = gptOptions(cfg);
    const C = cfg.n_embd;
    const kvC = o.nKvHead * (C / cfg.n_head);
    const H = o.nInner;
    const w = (name: string) => {
      const t = weights.get(name);
      if (!t) throw new EngineError('input', `export: weight "${name}" is missing`);
      return t;
    };
    const out = new Map<string, TensorData>();
    const put = (name: string, dims: number[], data: Float32Array) => out.set(name, { dtype: 'float32', dims, data });
    put('model.embed_tokens.weight', [cfg.vocab_size, C], w('wte'));
    for (let i = 0; i < cfg.n_layer; i++) {
      const l = `model.layers.${i}`;
      const h = `h.${i}`;
      put(`${l}.input_layernorm.weight`, [C], w(`${h}.ln_1.weight`));
      put(`${l}.post_attention_layernorm.weight`, [C], w(`${h}.ln_2.weight`));
      const [q, k, v] = splitTransposed(w(`${h}.attn.c_attn.weight`), [C, kvC, kvC], C);
      put(`${l}.self_attn.q_proj.weight`, [C, C], q!);
      put(`${l}.self_attn.k_proj.weight`, [kvC, C], k!);
      put(`${l}.self_attn.v_proj.weight`, [kvC, C], v!);
      put(`${l}.self_attn.o_proj.weight`, [C, C], transpose2(w(`${h}.attn.c_proj.weight`), C, C));
      const [gate, up] = splitTransposed(w(`${h}.mlp.c_fc.weight`), [H, H], C);
      put(`${l}.mlp.gate_proj.weight`, [H, C], gate!);
      put(`${l}.mlp.up_proj.weight`, [H, C], up!);
      put(`${l}.mlp.down_proj.weight`, [C, H], transpose2(w(`${h}.mlp.c_proj.weight`), H, C));
      if (cfg.bias) {
        const [qb, kb, vb] = splitFlat(w(`${h}.attn.c_attn.bias`), [C, kvC, kvC]);
        put(`${l}.self_attn.q_proj.bias`, [C], qb!);
        put(`${l}.self_attn.k_proj.bias`, [kvC], kb!);
        put(`${l}.self_attn.v_proj.bias`, [kvC], vb!);
        put(`${l}.self_attn.o_proj.bias`, [C], w(`${h}.attn.c_proj.bias`));
        const [gb, ub] = splitFlat(w(`${h}.mlp.c_fc.bias`), [H, H]);
        put(`${l}.mlp.gate_proj.bias`, [H], gb!);
        put(`${l}.mlp.up_proj.bias`, [H], ub!);
        put(`${l}.mlp.down_proj.bias`, [C], w(`${h}.mlp.c_proj.bias`));
      }
    }
    put('model.norm.weight', [C], w('ln_f.weight'));
    if (!o.tie) put('lm_head.weight', [cfg.vocab_size, C], w('lm_head.weight'));
    return out;
  },
};
