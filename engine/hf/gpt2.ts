// GPT2LMHeadModel ⇄ our GPT (pos 'learned', norm 'layernorm', mlp 'gelu', the default options).
// HF GPT-2 stores its linear layers as Conv1D, (in, out), exactly our layout, so the weights map by
// name alone: `transformer.` prefix, `wte.weight`/`wpe.weight` for our `wte`/`wpe`, and
// lm_head.weight only when the head is untied. Every GPT2Config key that changes the math is read
// here; docs/hf.md lists them.

import type { TensorData } from '../graph/ir';
import { explicitGptConfig, gptOptions, gptParams, GptConfigSchema } from '../models/gpt';
import { EngineError } from '../errors';
import { HfConfigReader, type HfGptArch, type SpecialTokenIds } from './config-keys';

/** GPT-2's tanh-approximated GELU under both of HF's names; 'gelu' (erf) is a different function. */
const TANH_GELU = ['gelu_new', 'gelu_pytorch_tanh'];

/** Our name → GPT2LMHeadModel's. */
export function gpt2HfName(name: string): string {
  if (name === 'lm_head.weight') return name;
  if (name === 'wte' || name === 'wpe') return `transformer.${name}.weight`;
  return `transformer.${name}`;
}

export const gpt2: HfGptArch = {
  architecture: 'GPT2LMHeadModel',

  configFromHf(json, where) {
    const r = new HfConfigReader(json, where);
    r.oneOf('activation_function', 'gelu_new', TANH_GELU, `our GPT-2 MLP is GELU with the tanh approximation (${TANH_GELU.join(' or ')})`);
    r.oneOf('scale_attn_weights', true, [true], 'our attention always scales scores by 1/sqrt(head size)');
    r.oneOf('scale_attn_by_inverse_layer_idx', false, [false], 'our attention does not scale scores by 1/(layer index + 1)');
    r.oneOf('add_cross_attention', false, [false], 'our GPT has no cross-attention');
    // reorder_and_upcast_attn only changes fp16 rounding; we compute attention in float32 either way.
    const drops = ['resid_pdrop', 'embd_pdrop', 'attn_pdrop'].map((k) => [k, r.num(k, 0.1)] as const);
    if (drops.some(([, v]) => v !== drops[0]![1])) {
      r.refuse('attn_pdrop', `our GPT has one dropout ratio for embeddings, attention and residuals; here ${drops.map(([k, v]) => `${k} ${v}`).join(', ')}`);
    }
    if (drops[0]![1] < 0 || drops[0]![1] >= 1) r.refuse('resid_pdrop', 'dropout must be in [0, 1)');
    const nInner = r.has('n_inner') ? r.int('n_inner') : null;
    const cfg = {
      vocab_size: r.int('vocab_size', 50257),
      block_size: r.int('n_positions', 1024),
      n_layer: r.int('n_layer', 12),
      n_head: r.int('n_head', 12),
      n_embd: r.int('n_embd', 768),
      bias: true,
      pos: 'learned',
      norm: 'layernorm',
      norm_eps: r.num('layer_norm_epsilon', 1e-5),
      mlp: 'gelu',
      n_inner: nInner,
      dropout: drops[0]![1],
      tie_embeddings: r.bool('tie_word_embeddings', true),
    };
    const parsed = GptConfigSchema.safeParse(cfg);
    if (!parsed.success) throw new EngineError('config', `${where}: ${parsed.error.issues[0]!.path.join('.')}: ${parsed.error.issues[0]!.message}`);
    return explicitGptConfig(parsed.data);
  },

  readWeights(cfg, folder, onTensor) {
    // GPT2Model (no head) saves without the `transformer.` prefix.
    const prefixed = folder.has('transformer.wte.weight');
    const used = new Set<string>();
    const weights = new Map<string, Float32Array>();
    for (const spec of gptParams(cfg)) {
      let src = gpt2HfName(spec.name);
      if (!prefixed && src.startsWith('transformer.')) src = src.slice('transformer.'.length);
      weights.set(spec.name, folder.tensor(src, spec.shape).data);
      used.add(src);
      onTensor?.(src);
    }
    // The tied copy of wte when a writer kept it anyway.
    if (gptOptions(cfg).tie && folder.has('lm_head.weight')) used.add('lm_head.weight');
    return { weights, used };
  },

  configToHf(cfg, tokens: SpecialTokenIds) {
    const o = gptOptions(cfg);
    if (o.pos !== 'learned' || o.norm !== 'layernorm' || o.mlp !== 'gelu') {
      throw new EngineError('config', `GPT2LMHeadModel needs pos 'learned', norm 'layernorm', mlp 'gelu'; this model has pos '${o.pos}', norm '${o.norm}', mlp '${o.mlp}'`);
    }
    if (o.nKvHead !== cfg.n_head) throw new EngineError('config', `GPT2LMHeadModel has no grouped-query attention; this model has n_kv_head ${o.nKvHead} for n_head ${cfg.n_head}`);
    return {
      model_type: 'gpt2',
      architectures: ['GPT2LMHeadModel'],
      vocab_size: cfg.vocab_size,
      n_positions: cfg.block_size,
      n_embd: cfg.n_embd,
      n_layer: cfg.n_layer,
      n_head: cfg.n_head,
      n_inner: o.nInner,
      activation_function: 'gelu_new',
      layer_norm_epsilon: o.normEps,
      resid_pdrop: o.dropout,
      embd_pdrop: o.dropout,
      attn_pdrop: o.dropout,
      scale_attn_weights: true,
      scale_attn_by_inverse_layer_idx: false,
      reorder_and_upcast_attn: false,
      add_cross_attention: false,
      tie_word_embeddings: o.tie,
      bos_token_id: tokens.bos,
      eos_token_id: tokens.eos,
      ...(tokens.pad != null ? { pad_token_id: tokens.pad } : {}),
      torch_dtype: 'float32',
    };
  },

  weightsToHf(cfg, weights) {
    const out = new Map<string, TensorData>();
    const C = cfg.n_embd;
    const o = gptOptions(cfg);
    for (const spec of gptParams(cfg)) {
      const w = weights.get(spec.name);
      if (!w) throw new EngineError('input', `export: weight "${spec.name}" is missing`);
      out.set(gpt2HfName(spec.name), { dtype: 'float32', dims: spec.shape, data: w });
    }
    if (!cfg.bias) {
      // GPT-2 always has biases; zeros reproduce a model trained without them exactly.
      const zeros = (name: string, n: number) => out.set(gpt2HfName(name), { dtype: 'float32', dims: [n], data: new Float32Array(n) });
      for (let i = 0; i < cfg.n_layer; i++) {
        zeros(`h.${i}.ln_1.bias`, C);
        zeros(`h.${i}.ln_2.bias`, C);
        zeros(`h.${i}.attn.c_attn.bias`, 3 * C);
        zeros(`h.${i}.attn.c_proj.bias`, C);
        zeros(`h.${i}.mlp.c_fc.bias`, o.nInner);
        zeros(`h.${i}.mlp.c_proj.bias`, C);
      }
      zeros('ln_f.bias', C);
    }
    return out;
  },
};
