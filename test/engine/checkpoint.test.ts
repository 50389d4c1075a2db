import { packCheckpoint, unpackCheckpoint, WEIGHTS_FILE, STATE_FILE, type Checkpoint } from '../../engine/checkpoint/checkpoint';

const ckpt = (): Checkpoint => ({
  weights: new Map([['wte', { dtype: 'float32', dims: [2, 2], data: Float32Array.from([0.5, -1, 2, 3]) }]]),
  optimizer: new Map([['exp_avg:wte', { dtype: 'float32', dims: [2, 2], data: Float32Array.from([0, 0, 0.25, 0]) }]]),
  state: {
    modelConfig: { family: 'gpt', n_layer: 2 },
    runConfig: { lr: 3e-4 },
    step: 120,
    round: 3,
    bestValLoss: 2.5,
    dataCursor: { shard: 1, step: 120, seed: 7 },
    rng: [7, 120],
  },
});

describe('checkpoint object', () => {
  test('packs into weights, optimizer and state files and unpacks to the same object', () => {
    const files = packCheckpoint(ckpt());
    expect([...files.keys()].sort()).toEqual([STATE_FILE, 'model.safetensors', 'optimizer.safetensors'].sort());
    const back = unpackCheckpoint(files);
    expect(back.state).toEqual({ family: 'gpt', ...ckpt().state });
    expect(Array.from(back.weights.get('wte')!.data as Float32Array)).toEqual([0.5, -1, 2, 3]);
    expect(Array.from(back.optimizer.get('exp_avg:wte')!.data as Float32Array)).toEqual([0, 0, 0.25, 0]);
  });

  test('the state records the model family; a checkpoint.json written before the field reads as GPT', () => {
    const t5 = packCheckpoint({ ...ckpt(), state: { ...ckpt().state, family: 't5' } });
    expect(unpackCheckpoint(t5).state.family).toBe('t5');
    const files = packCheckpoint(ckpt());
    const doc = JSON.parse(files.get(STATE_FILE)!.toString());
    delete doc.family;
    files.set(STATE_FILE, Buffer.from(JSON.stringify(doc)));
    expect(unpackCheckpoint(files).state.family).toBe('gpt');
  });

  test('a corrupted weights file is named', () => {
    const files = packCheckpoint(ckpt());
    const w = Buffer.from(files.get(WEIGHTS_FILE)!);
    w[w.length - 1] ^= 0xff;
    files.set(WEIGHTS_FILE, w);
    expect(() => unpackCheckpoint(files, 'runs/r1/ckpt/3')).toThrow(/runs\/r1\/ckpt\/3\/model\.safetensors: sha256 .* \(corrupt file\)/);
  });

  test('an invalid state document names the field', () => {
    const files = packCheckpoint(ckpt());
    const doc = JSON.parse(files.get(STATE_FILE)!.toString());
    doc.step = -1;
    files.set(STATE_FILE, Buffer.from(JSON.stringify(doc)));
    expect(() => unpackCheckpoint(files, 'c')).toThrow(/c\/checkpoint\.json: step:/);
  });
});
