// Preset parameter counts must equal what Hugging Face reports for the original models
// (model.num_parameters()), which pins every shape of the three architectures.

import { GptConfigSchema } from '../../engine/models/gpt';
import { countParams, getPreset, hfParamName, PRESET_NAMES, presetParamCount, presetParams } from '../../engine/models/presets';
import { T5ConfigSchema } from '../../engine/models/t5';
import { BertConfigSchema } from '../../engine/models/bert';

describe('model presets', () => {
  it('gpt2-small has 124439808 parameters (GPT2LMHeadModel, head tied to wte)', () => {
    expect(presetParamCount('gpt2-small')).toBe(124439808);
  });

  it('bert-base has 109482240 parameters (BertModel: encoder + pooler)', () => {
    expect(presetParamCount('bert-base')).toBe(109482240);
  });

  it('t5-small has 60506624 parameters (T5ForConditionalGeneration, head tied to shared)', () => {
    expect(presetParamCount('t5-small')).toBe(60506624);
  });

  it('lists every preset, tiny ones included, and each has unique parameter names', () => {
    expect(PRESET_NAMES).toEqual(expect.arrayContaining(['gpt2-small', 'bert-base', 't5-small', 'tiny-gpt', 'tiny-bert', 'tiny-t5']));
    for (const name of PRESET_NAMES) {
      const names = presetParams(getPreset(name)).map((s) => s.name);
      expect(new Set(names).size).toBe(names.length);
    }
    // Tiny presets stay tiny: under 200k weights, so tests build and train them in seconds.
    for (const name of ['tiny-gpt', 'tiny-bert', 'tiny-t5']) expect(countParams(getPreset(name))).toBeLessThan(200_000);
  });

  it('an unknown preset name is an error that lists the known ones', () => {
    expect(() => presetParamCount('gpt5')).toThrow(/unknown model preset "gpt5"; known presets: gpt2-small, bert-base, t5-small/);
  });

  it('an untied T5 head adds exactly one vocab × d_model matrix', () => {
    const cfg = getPreset('t5-small').config;
    const untied = { family: 't5' as const, config: T5ConfigSchema.parse({ ...cfg, tie_word_embeddings: false }) };
    expect(countParams(untied) - presetParamCount('t5-small')).toBe(32128 * 512);
  });

  it('config schemas name the field that is wrong', () => {
    const bert = BertConfigSchema.safeParse({ vocab_size: 10, hidden_size: 30, num_hidden_layers: 1, num_attention_heads: 4, intermediate_size: 8 });
    expect(bert.success).toBe(false);
    expect(bert.error!.issues[0].path).toEqual(['num_attention_heads']);
    expect(bert.error!.issues[0].message).toContain('30 % 4');
    const t5 = T5ConfigSchema.safeParse({ vocab_size: 10, d_model: 8, d_kv: 2, d_ff: 8, num_layers: 1, num_heads: 4, feed_forward_proj: 'swish' });
    expect(t5.success).toBe(false);
    expect(t5.error!.issues[0].path).toEqual(['feed_forward_proj']);
    expect(GptConfigSchema.safeParse({ vocab_size: 10, block_size: 8, n_layer: 1, n_head: 3, n_embd: 8 }).success).toBe(false);
  });

  it('maps the key styles of published HF checkpoints onto our names, dropping tied copies and buffers', () => {
    const gpt = getPreset('gpt2-small');
    // GPT2LMHeadModel files nest under transformer.; GPT2Model files (the hub's gpt2) do not.
    expect(hfParamName(gpt, 'transformer.wte.weight')).toBe('wte');
    expect(hfParamName(gpt, 'wpe.weight')).toBe('wpe');
    expect(hfParamName(gpt, 'h.3.attn.c_attn.bias')).toBe('h.3.attn.c_attn.bias');
    expect(hfParamName(gpt, 'h.3.attn.bias')).toBeNull(); // causal-mask buffer
    expect(hfParamName(gpt, 'lm_head.weight')).toBeNull(); // tied to wte
    const bert = getPreset('bert-base');
    expect(hfParamName(bert, 'bert.encoder.layer.0.attention.output.LayerNorm.gamma')).toBe('encoder.layer.0.attention.output.LayerNorm.weight');
    expect(hfParamName(bert, 'bert.embeddings.LayerNorm.beta')).toBe('embeddings.LayerNorm.bias');
    expect(hfParamName(bert, 'cls.predictions.decoder.weight')).toBeNull(); // tied to word_embeddings
    const t5 = getPreset('t5-small');
    expect(hfParamName(t5, 'encoder.embed_tokens.weight')).toBeNull();
    expect(hfParamName(t5, 'lm_head.weight')).toBeNull(); // tied head
    expect(hfParamName(t5, 'decoder.block.5.layer.1.EncDecAttention.o.weight')).toBe('decoder.block.5.layer.1.EncDecAttention.o.weight');
    const names = new Set(presetParams(t5).map((s) => s.name));
    expect(names.has('decoder.block.5.layer.1.EncDecAttention.o.weight')).toBe(true);
    expect(names.has('decoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight')).toBe(false); // only block 0 has it
  });
});
