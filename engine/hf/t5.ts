// T5ForConditionalGeneration ⇄ our T5 (engine/models/t5.ts), v1.0 (ReLU, tied head scaled by
// d_model^-0.5) and v1.1 (gated-GELU, untied head). Our T5 parameters carry HF's names and torch's
// (out, in) layout, so weights map by name; encoder.embed_tokens and decoder.embed_tokens are
// aliases of shared.weight (and lm_head.weight is one when the head is tied).

import type { TensorData } from '../graph/ir';
import { t5Params, T5ConfigSchema, type T5Config } from '../models/t5';
import { EngineError } from '../errors';
import { HfConfigReader, type SpecialTokenIds } from './config-keys';
import type { HfFolder } from './folder';

const TIED_ALIASES = ['encoder.embed_tokens.weight', 'decoder.embed_tokens.weight'];

export function t5ConfigFromHf(json: Record<string, unknown>, where: string): T5Config {
  const r = new HfConfigReader(json, where);
  const proj = r.oneOf('feed_forward_proj', 'relu', ['relu', 'gated-gelu'], "our T5 feed-forward is 'relu' (v1.0) or 'gated-gelu' (v1.1)");
  // transformers derives dense_act_fn from feed_forward_proj; a file that disagrees is refused rather than guessed.
  const act = r.str('dense_act_fn', proj === 'relu' ? 'relu' : 'gelu_new');
  if ((proj === 'relu' && act !== 'relu') || (proj === 'gated-gelu' && !['gelu_new', 'gelu_pytorch_tanh'].includes(act))) {
    r.refuse('dense_act_fn', `feed_forward_proj "${proj}" computes with ${proj === 'relu' ? 'relu' : 'tanh GELU (gelu_new)'}`);
  }
  r.oneOf('is_gated_act', proj === 'gated-gelu', [proj === 'gated-gelu'], `feed_forward_proj "${proj}" is ${proj === 'gated-gelu' ? '' : 'not '}gated`);
  r.oneOf('is_encoder_decoder', true, [true], 'T5ForConditionalGeneration is an encoder-decoder');
  // Our T5 scales the decoder output by d_model^-0.5 exactly when its head is tied (v1.0); an untied
  // head (v1.1) has its own lm_head.weight. transformers 4 wrote tie_word_embeddings false for v1.1;
  // transformers 5 writes scale_decoder_outputs false and always ties, saving no lm_head.weight:
  // that is our untied head starting as a copy of shared.weight (the same function).
  const tiedInFile = r.bool('tie_word_embeddings', true);
  const scale = r.bool('scale_decoder_outputs', tiedInFile);
  if (scale && !tiedInFile) r.refuse('scale_decoder_outputs', 'scaling the decoder output with an untied head is not an option of our T5');
  const tie = tiedInFile && scale;
  // dropout_rate and classifier_dropout act in training only.
  const cfg = {
    vocab_size: r.int('vocab_size', 32128),
    d_model: r.int('d_model', 512),
    d_kv: r.int('d_kv', 64),
    d_ff: r.int('d_ff', 2048),
    num_layers: r.int('num_layers', 6),
    num_decoder_layers: r.has('num_decoder_layers') ? r.int('num_decoder_layers') : null,
    num_heads: r.int('num_heads', 8),
    relative_attention_num_buckets: r.int('relative_attention_num_buckets', 32),
    relative_attention_max_distance: r.int('relative_attention_max_distance', 128),
    layer_norm_epsilon: r.num('layer_norm_epsilon', 1e-6),
    feed_forward_proj: proj,
    tie_word_embeddings: tie,
    initializer_factor: r.num('initializer_factor', 1),
    pad_token_id: r.tokenId('pad_token_id') ?? 0,
    decoder_start_token_id: r.tokenId('decoder_start_token_id') ?? r.tokenId('pad_token_id') ?? 0,
  };
  const parsed = T5ConfigSchema.safeParse(cfg);
  if (!parsed.success) throw new EngineError('config', `${where}: ${parsed.error.issues[0]!.path.join('.')}: ${parsed.error.issues[0]!.message}`);
  return parsed.data;
}

export function readT5Weights(cfg: T5Config, folder: HfFolder, onTensor?: (name: string) => void): { weights: Map<string, Float32Array>; used: Set<string> } {
  const used = new Set<string>();
  const weights = new Map<string, Float32Array>();
  for (const spec of t5Params(cfg)) {
    // An unscaled head saved tied (transformers 5) starts as shared.weight.
    const src = spec.name === 'lm_head.weight' && !folder.has(spec.name) ? 'shared.weight' : spec.name;
    weights.set(spec.name, src === spec.name ? folder.tensor(src, spec.shape).data : Float32Array.from(folder.tensor(src, spec.shape).data));
    used.add(src);
    onTensor?.(src);
  }
  for (const alias of [...TIED_ALIASES, ...(cfg.tie_word_embeddings ? ['lm_head.weight'] : [])]) if (folder.has(alias)) used.add(alias);
  return { weights, used };
}

export function t5ConfigToHf(cfg: T5Config, tokens: SpecialTokenIds): Record<string, unknown> {
  const gated = cfg.feed_forward_proj === 'gated-gelu';
  return {
    model_type: 't5',
    architectures: ['T5ForConditionalGeneration'],
    vocab_size: cfg.vocab_size,
    d_model: cfg.d_model,
    d_kv: cfg.d_kv,
    d_ff: cfg.d_ff,
    num_layers: cfg.num_layers,
    num_decoder_layers: cfg.num_decoder_layers ?? cfg.num_layers,
    num_heads: cfg.num_heads,
    relative_attention_num_buckets: cfg.relative_attention_num_buckets,
    relative_attention_max_distance: cfg.relative_attention_max_distance,
    layer_norm_epsilon: cfg.layer_norm_epsilon,
    feed_forward_proj: cfg.feed_forward_proj,
    dense_act_fn: gated ? 'gelu_new' : 'relu',
    is_gated_act: gated,
    is_encoder_decoder: true,
    tie_word_embeddings: cfg.tie_word_embeddings,
    scale_decoder_outputs: cfg.tie_word_embeddings,
    initializer_factor: cfg.initializer_factor,
    dropout_rate: 0,
    pad_token_id: cfg.pad_token_id,
    decoder_start_token_id: cfg.decoder_start_token_id,
    eos_token_id: tokens.eos,
    torch_dtype: 'float32',
  };
}

export function t5WeightsToHf(cfg: T5Config, weights: Map<string, Float32Array>): Map<string, TensorData> {
  const out = new Map<string, TensorData>();
  for (const spec of t5Params(cfg)) {
    const w = weights.get(spec.name);
    if (!w) throw new EngineError('input', `export: weight "${spec.name}" is missing`);
    out.set(spec.name, { dtype: 'float32', dims: spec.shape, data: w });
  }
  return out;
}
