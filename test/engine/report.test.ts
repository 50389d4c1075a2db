// The run report renders what a reader needs: every loss point on the curves at the right place,
// one table row per variant with the refusal reason naming bound and figure, samples and config,
// all escaped and self-contained (no scripts, no external files).

import { coverageText, lineChartSvg, lossCurvesSvg, niceTicks, renderFamilyReportHtml, renderFamilyReportText, renderReportHtml, renderReportText, type FamilyReport, type RunReport } from '../../engine/report';

const train = [1, 2, 3, 4].map((round) => ({ round, loss: 5 - round * 0.7 }));
const val = [0, 1, 2, 3, 4].map((round) => ({ round, step: round * 40, loss: 5.6 - round * 0.75, perplexity: Math.exp(5.6 - round * 0.75) }));

/** Circles of one series as {x, y, cx, cy}. */
function points(svg: string, series: string) {
  const group = new RegExp(`<g class="series" data-series="${series.replace(/[()]/g, '\\$&')}">([\\s\\S]*?)</g>`).exec(svg);
  if (!group) throw new Error(`series ${series} not in svg`);
  return [...group[1].matchAll(/<circle cx="([\d.]+)" cy="([\d.]+)"[^>]*data-x="([^"]+)" data-y="([^"]+)"/g)].map((m) => ({
    cx: Number(m[1]),
    cy: Number(m[2]),
    x: Number(m[3]),
    y: Number(m[4]),
  }));
}

describe('loss curves SVG', () => {
  const svg = lossCurvesSvg({ train, val });

  test('plots every train and val point with its values; falling loss goes down the picture', () => {
    const t = points(svg, 'train loss (mean of round)');
    const v = points(svg, 'validation loss');
    expect(t.map((p) => [p.x, p.y])).toEqual(train.map((p) => [p.round, p.loss]));
    expect(v.map((p) => [p.x, p.y])).toEqual(val.map((p) => [p.round, p.loss]));
    // x grows to the right with the round, lower loss is lower on the page (larger cy).
    for (let i = 1; i < v.length; i++) {
      expect(v[i].cx).toBeGreaterThan(v[i - 1].cx);
      expect(v[i].cy).toBeGreaterThan(v[i - 1].cy);
    }
    // The same round is at the same x in both series.
    expect(t[0].cx).toBeCloseTo(v[1].cx, 1);
    expect(svg).toContain('<polyline');
    expect(svg).toContain('stroke-dasharray'); // val dashed, readable in greyscale
  });

  test('has axis titles, integer round ticks, loss ticks covering the data, and a legend', () => {
    expect(svg).toContain('>round</text>');
    expect(svg).toContain('cross-entropy (nats / token)');
    const xt = [...svg.matchAll(/class="xtick"[^>]*>([^<]+)</g)].map((m) => Number(m[1]));
    expect(xt).toEqual([0, 1, 2, 3, 4]);
    const yt = [...svg.matchAll(/class="ytick"[^>]*>([^<]+)</g)].map((m) => Number(m[1]));
    expect(Math.min(...yt)).toBeLessThanOrEqual(2.2);
    expect(Math.max(...yt)).toBeGreaterThanOrEqual(5.6);
    expect(svg).toMatch(/<g class="legend">[\s\S]*train loss \(mean of round\)[\s\S]*validation loss/);
  });

  test('a NaN loss is left out instead of breaking the scale; an empty series says so', () => {
    const s = lineChartSvg([
      { name: 'a', color: '#000', points: [{ x: 0, y: 1 }, { x: 1, y: NaN }, { x: 2, y: 0.5 }] },
      { name: 'b', color: '#f00', points: [] },
    ]);
    expect(points(s, 'a').map((p) => p.x)).toEqual([0, 2]);
    expect(s).not.toContain('NaN');
    expect(s).toContain('b (no data)');
  });

  test('nice ticks are 1/2/5 × 10^k steps covering the range', () => {
    expect(niceTicks(0.13, 0.97, 5)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(2.31, 5.58, 6)).toEqual([2, 3, 4, 5, 6]);
    expect(niceTicks(2.31, 5.58, 12)).toEqual([2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6]);
    const flat = niceTicks(3, 3);
    expect(flat[0]).toBeLessThan(3);
    expect(flat[flat.length - 1]).toBeGreaterThan(3);
  });
});

describe('HTML run report', () => {
  const report: RunReport = {
    runId: 'brown-<tiny>',
    createdAt: '2025-01-01T00:00:00.000Z',
    model: { family: 'gpt', params: 53120, config: { vocab_size: 259, n_layer: 2, n_embd: 32 } },
    dataset: { prefix: 'datasets/brown-humor-0123', tokenizer: 'byte', trainTokens: 160000, valTokens: 40000, documents: 29 },
    checkpoint: 'runs/brown/global/r000004',
    trainHistory: train,
    valHistory: val,
    evaluation: { batches: 4, batchSize: 8, contextLength: 32, tokens: 1024, splitTokens: 39999, batchCap: 4, speedRuns: 10, device: 'cpu (1 thread)' },
    variants: [
      { name: 'fp32', method: 'fp32', key: 'runs/brown/models/fp32/model.onnx', sha256: 'a'.repeat(64), sizeBytes: 240000, ppl: 10.5, pplDeltaPct: 0, maxPplIncrease: null, p50Ms: 4, p95Ms: 5, tokensPerSec: 64000, published: true },
      { name: 'int8', method: 'int8-dynamic', key: 'runs/brown/models/int8/model.onnx', sha256: 'b'.repeat(64), sizeBytes: 100000, ppl: 10.52, pplDeltaPct: 0.19, maxPplIncrease: 0.02, p50Ms: 3, p95Ms: 4, tokensPerSec: 85000, published: true, compression: 3.1, quantizedNodes: 8, skippedNodes: 1 },
      {
        name: 'int4-tight',
        method: 'int4',
        key: 'runs/brown/rejected/int4-tight/model.onnx',
        sha256: 'c'.repeat(64),
        sizeBytes: 80000,
        ppl: 10.6,
        pplDeltaPct: 0.95,
        maxPplIncrease: 0.001,
        p50Ms: 4.5,
        p95Ms: 6,
        tokensPerSec: 56000,
        published: false,
        rejectedReason: 'validation perplexity 10.6000 vs fp32 10.5000 is 0.95% higher, above the bound maxPplIncrease = 0.10%',
      },
    ],
    samples: [
      { variant: 'int8', prompt: 'The <b>jury</b> ', text: 'said & did "it"', settings: 'greedy, 32 new tokens' },
      { variant: 'int8', prompt: 'The <b>jury</b> ', text: 'was out', settings: 'temperature 0.8, top-k 40, top-p 0.95, seed 0, 32 new tokens' },
    ],
    config: { training: { rounds: 4, optimizer: { lr: 0.003 } }, postTraining: { quant: [{ method: 'int8-dynamic' }] } },
  };
  const html = renderReportHtml(report);

  test('one eval-table row per variant, with size, ppl delta, latency and speed-up against fp32', () => {
    const rows = [...html.matchAll(/<tr(?: class="rejected")? data-variant="([^"]+)">([\s\S]*?)<\/tr>/g)];
    expect(rows.map((r) => r[1])).toEqual(['fp32', 'int8', 'int4-tight']);
    const int8 = rows[1][2];
    expect(int8).toContain('+0.19%');
    expect(int8).toContain('2.40× smaller');
    expect(int8).toContain('(1.33×)'); // tokens/s vs fp32
    expect(int8).toContain('3.00 ms');
    expect(int8).toContain('≤ 2.00%');
  });

  test('a refused variant is marked unpublished and the reason names the bound and the figure', () => {
    expect(html).toMatch(/<tr class="rejected" data-variant="int4-tight">[\s\S]*?<b>no<\/b>: validation perplexity 10\.6000 vs fp32 10\.5000 is 0\.95% higher, above the bound maxPplIncrease = 0\.10%/);
    expect(html).toContain('Not published: int4-tight');
  });

  test('the headline tells the story: rounds, val loss from/to, the best published variant', () => {
    expect(html).toContain('trained for 4 rounds');
    expect(html).toContain('Validation loss went from 5.6 (round 0) to 2.6 (round 4)');
    expect(html).toMatch(/Fastest published variant: <b>int8<\/b> \(int8-dynamic\): 1\.33× the fp32 tokens\/s, 2\.40× smaller, perplexity \+0\.19%/);
    // The training curve's val losses cover only the first evalBatches batches, and the headline says so.
    const scoped = renderReportHtml({ ...report, config: { ...report.config, training: { rounds: 4, evalBatches: 2, batchSize: 8, contextLength: 32 } } });
    expect(scoped).toMatch(/perplexity 13\.46? \(on the first 2 validation batches, at most 512 tokens, the same each time; the table below scores the models on /);
    // When quantization did not pay off in speed, the headline does not call a slower variant "fastest".
    const slow = renderReportHtml({ ...report, variants: report.variants.map((v) => (v.name === 'int8' ? { ...v, tokensPerSec: 50000 } : v)) });
    expect(slow).not.toContain('Fastest published variant');
    expect(slow).toMatch(/No published variant ran faster than fp32 here; the smallest is <b>int8<\/b> \(int8-dynamic\): 0\.78× the fp32 tokens\/s/);
  });

  test('curves, samples, config and artifacts are there; user text is escaped; nothing external loads', () => {
    expect(html).toContain('<svg');
    expect(points(html, 'validation loss')).toHaveLength(5);
    expect(html).toContain('<span class="prompt">The &lt;b&gt;jury&lt;/b&gt; </span>said &amp; did &quot;it&quot;');
    expect(html).toContain('TruthGPT run <code>brown-&lt;tiny&gt;</code>');
    expect(html).toContain('<th>training.optimizer.lr</th><td>0.003</td>');
    expect(html).toContain('<th>postTraining.quant.0.method</th><td>int8-dynamic</td>');
    expect(html).toContain('runs/brown/models/int8/model.onnx');
    expect(html).toContain('b'.repeat(64));
    expect(html).not.toMatch(/<script|<link|src="http/);
    expect(renderReportHtml(report)).toBe(html); // deterministic
  });

  test('the perplexity says what it covers: the whole split, or the capped share of it', () => {
    expect(html).toContain('<p class="coverage">Validation perplexity over 1,024 of the validation split&#39;s 39,999 target tokens (2.56%, evaluation.batches 4).</p>');
    expect(renderReportText(report)).toContain('Variants (ppl over 1,024 of the validation split\'s 39,999 target tokens (2.56%, evaluation.batches 4); latency');
    const whole = { ...report.evaluation, batches: 5000, tokens: 39999, batchCap: null };
    const page = renderReportHtml({ ...report, evaluation: whole });
    expect(page).toContain('<p class="coverage">Validation perplexity over all 39,999 target tokens of the validation split.</p>');
    expect(page).toContain('5000 batches of up to 8 non-overlapping windows of 32 tokens (the last one as long as the tokens left)');
    expect(coverageText(whole)).toBe('all 39,999 target tokens of the validation split');
    // A report stored before coverage was recorded still renders, and says what it does not know.
    expect(coverageText({ tokens: 4096 })).toBe('4,096 validation tokens (share of the split not recorded)');
  });

  test('greedy and seeded samples of the same variant and prompt sit side by side', () => {
    const row = /<div class="samples-row">([\s\S]*?)<\/div><\/div>(?=<div class="samples-row">|\n)/.exec(html)![1];
    expect(row).toContain('int8 · greedy, 32 new tokens');
    expect(row).toContain('int8 · temperature 0.8, top-k 40, top-p 0.95, seed 0, 32 new tokens');
    expect(row.indexOf('greedy')).toBeLessThan(row.indexOf('temperature'));
    expect(html.match(/class="samples-row"/g)).toHaveLength(1);
  });

  test('the terminal form tells the same story: losses per round, one aligned row per variant, the refusal', () => {
    const text = renderReportText(report);
    const lines = text.split('\n');
    expect(lines[0]).toBe('TruthGPT run brown-<tiny>  (report 2025-01-01T00:00:00.000Z)');
    expect(text).toContain('val loss   5.6 (round 0) → 2.6 (round 4), perplexity 13.46');
    expect(lines.find((l) => /^4 /.test(l))).toMatch(/^4\s+2\.2\s+2\.6\s+13\.464$/);
    const rows = ['fp32', 'int8', 'int4-tight'].map((n) => lines.find((l) => l.startsWith(`${n} `))!);
    expect(rows[1]).toMatch(/^int8\s+int8-dynamic\s+100000\s+10\.52\s+\+0\.19%\s+2\.00%\s+3\.00\s+4\.00\s+85000\s+yes$/);
    expect(rows[2]).toMatch(/\s+NO$/);
    expect(new Set(rows.map((r) => r.length)).size).toBe(1); // columns aligned
    expect(text).toContain('int4-tight not published: validation perplexity 10.6000 vs fp32 10.5000 is 0.95% higher, above the bound maxPplIncrease = 0.10%');
    expect(text).toContain('[int8, greedy, 32 new tokens] "The <b>jury</b> said & did \\"it\\""');
  });

  test('a DiLoCo run with several workers gets each shard\'s train loss beside the val loss after each outer step', () => {
    // No section for a one-worker run, nor for a report stored before shard losses were recorded.
    expect(html).not.toContain('DiLoCo workers');
    expect(renderReportHtml({ ...report, trainHistory: train.map((p) => ({ ...p, shardLoss: [p.loss] })) })).not.toContain('DiLoCo workers');
    const shards = train.map((p, i) => ({ ...p, shardLoss: [p.loss - 0.05, p.loss + 0.05], pseudoGradNorm: 2 - i * 0.25 }));
    const page = renderReportHtml({ ...report, trainHistory: shards });
    expect(page).toContain('<h2>DiLoCo workers and outer steps</h2>');
    expect(page).toContain('DiLoCo: 2 workers and the outer steps');
    expect(points(page, 'shard 0 train loss (mean of round)').map((p) => [p.x, p.y])).toEqual(shards.map((p) => [p.round, p.shardLoss[0]]));
    expect(points(page, 'shard 1 train loss (mean of round)').map((p) => [p.x, p.y])).toEqual(shards.map((p) => [p.round, p.shardLoss[1]]));
    expect(points(page, 'validation loss after the outer step').map((p) => [p.x, p.y])).toEqual(val.map((p) => [p.round, p.loss]));
    // The numbers table: round, each shard, their spread, the pseudo-gradient norm, the val loss.
    const row = /<table class="grid workers">[\s\S]*?<tbody><tr>([\s\S]*?)<\/tr>/.exec(page)![1];
    expect([...row.matchAll(/<td>([^<]*)<\/td>/g)].map((m) => m[1])).toEqual(['1', '4.25', '4.35', '0.1', '2', '4.85']);
  });

  describe('after a LoRA stage', () => {
    const lora = {
      datasetPrefix: 'datasets/brown-fiction-<9f>',
      baseCheckpoint: 'runs/brown/global/r000004',
      pretrainDatasetPrefix: 'datasets/brown-humor-0123',
      valLossBefore: 2.91234,
      valLossAfter: 2.40123,
      perplexityBefore: Math.exp(2.91234),
      perplexityAfter: Math.exp(2.40123),
      trainable: 2048,
      total: 55168,
      trainableFraction: 2048 / 55168,
      steps: 120,
      adapterKey: 'finetunes/brown-lora/adapter/adapter_model.safetensors',
    };
    const tuned: RunReport = { ...report, checkpoint: 'finetunes/brown-lora/merged', dataset: { ...report.dataset, prefix: lora.datasetPrefix }, lora };

    test('the HTML headline and a LoRA section say the variants are the merged model, and which data each stage saw', () => {
      const page = renderReportHtml(tuned);
      expect(page).toContain(
        'It was then LoRA-tuned on <b>datasets/brown-fiction-&lt;9f&gt;</b> for 120 steps: validation loss 2.912 → 2.401, 3.71% of parameters trained; the variants below are the merged model.',
      );
      // The LoRA sentence follows pretraining's and comes before the variant verdict.
      expect(page).toMatch(/Validation loss went from 5\.6 \(round 0\)[^<]*It was then LoRA-tuned[\s\S]*Fastest published variant/);
      const section = /<h2>LoRA fine-tune<\/h2>([\s\S]*?)<h2>/.exec(page)![1];
      expect(section).toContain('<th>val loss</th><td>2.9123 → 2.4012</td>');
      expect(section).toContain('<th>trainable parameters</th><td>2,048 of 55,168 (3.71%)</td>');
      expect(section).toContain('<th>base checkpoint</th><td>runs/brown/global/r000004</td>');
      expect(section).toContain(`<th>adapter</th><td>${lora.adapterKey}</td>`);
      expect(section).toContain('<code>datasets/brown-humor-0123</code>'); // where the curves come from
      expect(page).toContain('<h2>Loss curves (pretraining)</h2>');
      expect(page).toContain('<th>dataset (LoRA, evaluation)</th><td>datasets/brown-fiction-&lt;9f&gt;</td>');
      expect(page).toContain('<th>pretraining dataset</th><td>datasets/brown-humor-0123</td>');
      // Sections in reading order: curves, then LoRA, then the evaluation of the merged model.
      expect(page.indexOf('<h2>Loss curves')).toBeLessThan(page.indexOf('<h2>LoRA fine-tune'));
      expect(page.indexOf('<h2>LoRA fine-tune')).toBeLessThan(page.indexOf('<h2>Evaluation'));
    });

    test('without a LoRA stage the page and the text say nothing about LoRA', () => {
      expect(html).not.toMatch(/LoRA/);
      expect(html).toContain('<h2>Loss curves</h2>');
      expect(renderReportText(report)).not.toMatch(/LoRA/);
    });

    test('the terminal form has the LoRA sentence under the headline numbers and a LoRA section', () => {
      const text = renderReportText(tuned);
      const lines = text.split('\n');
      const at = lines.findIndex((l) => l.startsWith('val loss '));
      expect(lines[at + 1]).toBe(
        'lora       then LoRA-tuned on datasets/brown-fiction-<9f>: val loss 2.912 → 2.401, 3.71% of parameters trained; the variants below are the merged model',
      );
      expect(text).toContain('Loss per round (pretraining on datasets/brown-humor-0123)');
      const section = text.slice(text.indexOf('LoRA fine-tune'), text.indexOf('Variants ('));
      expect(section).toMatch(/^val loss\s+2\.9123 → 2\.4012$/m);
      expect(section).toMatch(/^trainable\s+2,048 of 55,168 \(3\.71%\)$/m);
      expect(section).toMatch(/^steps\s+120$/m);
      expect(section).toContain(lora.adapterKey);
    });
  });
});

describe('HTML report of a classifier or a seq2seq run', () => {
  const seq2seq: FamilyReport = {
    runId: 'pipeline-t5-<x>',
    createdAt: '2026-12-03T11:00:00.000Z',
    task: 'seq2seq',
    model: { family: 't5', params: 83296, config: { d_model: 32, num_layers: 2 }, from: 'models/t5-tiny' },
    dataset: { prefix: 'datasets/copies-1', trainTokens: 1200, valTokens: 400, documents: 200 },
    checkpoint: 'finetunes/x-lora/merged',
    trainHistory: train,
    valHistory: val.map((v, i) => ({ ...v, score: i / 10, macroF1: null, examples: 43 })),
    lora: { r: 16, alpha: 32, targetModules: ['q', 'v'], trainable: 36864, total: 83296, steps: 480, chunkLoss: [{ step: 240, first: 5.3375, last: 1.1056 }, { step: 480, first: 0.9822, last: 0.8688 }], before: { loss: 5.3293, score: 0, macroF1: null }, after: { loss: 1.2739, score: 33 / 43, macroF1: null }, adapterPrefix: 'finetunes/x-lora/adapter', mergedCheckpoint: 'finetunes/x-lora/merged' },
    variants: [
      { name: 'fp32', method: 'fp32', score: 33 / 43, macroF1: null, perplexity: 3.57, drop: 0, bound: null, flips: null, bytes: null, published: true, rejectedReason: null, prefix: 'finetunes/x-lora/merged' },
      { name: 'int8', method: 'int8-dynamic', score: 30 / 43, macroF1: null, perplexity: null, drop: 3 / 43, bound: 0.02, flips: null, bytes: 40960, published: false, rejectedReason: 'exact match 69.77% vs fp32 76.74% <over the bound>', prefix: 'runs/x/rejected/int8' },
    ],
    config: { name: 't5-lora', lora: { lora: { r: 16 } } },
  };

  test('seq2seq: loss and exact-match curves with every point, the LoRA stage, the table with the refused row, escaped and self-contained', () => {
    const html = renderFamilyReportHtml(seq2seq);
    expect(renderFamilyReportHtml(seq2seq)).toBe(html); // pure
    expect(points(html, 'validation loss').map((p) => p.y)).toEqual(val.map((v) => v.loss));
    expect(points(html, 'validation exact match').map((p) => p.y)).toEqual([0, 0.1, 0.2, 0.3, 0.4]);
    expect(points(html, 'train loss, last step of chunk').map((p) => [p.x, p.y])).toEqual([[240, 1.1056], [480, 0.8688]]);
    expect(html).toContain('Exact match per round');
    expect(html).toContain('<td>76.74%</td><td>3.57</td>'); // fp32: exact match, target perplexity
    expect(html).toContain('<tr class="rejected"><td>int8</td><td>int8-dynamic</td><td>69.77%</td><td>-</td><td>6.98</td><td>2.00</td>');
    expect(html).toContain('refused: exact match 69.77% vs fp32 76.74% &lt;over the bound&gt;');
    expect(html).toContain('pipeline-t5-&lt;x&gt;');
    expect(html).toContain('36,864 of 83,296 (44.26%)');
    expect(html).not.toMatch(/<script|src=|href=/);
  });

  test('the terminal form (truthgpt report): headline, exact match per round, the refused variant with its reason', () => {
    const text = renderFamilyReportText(seq2seq);
    expect(text.split('\n').slice(0, 2)).toEqual([
      'run pipeline-t5-<x> (t5 seq2seq), checkpoint finetunes/x-lora/merged',
      'Validation exact match 0.00% → 40.00% over 43 examples, loss 5.6 → 2.6 (4 rounds). LoRA r=16: exact match 0.00% → 76.74%, loss 5.329 → 1.274. int8 refused: exact match 69.77% vs fp32 76.74% <over the bound>.',
    ]);
    expect(text).toContain('    4       2.6       40.00%');
    expect(text).toContain('fp32: exact match 76.74%, target ppl 3.57\nint8: exact match 69.77%, target ppl -, refused: exact match 69.77% vs fp32 76.74% <over the bound>');
  });

  test('classification: accuracy and macro F1 curves and columns', () => {
    const cls: FamilyReport = {
      ...seq2seq,
      task: 'classification',
      model: { family: 'bert', params: 1000, config: {} },
      valHistory: val.map((v, i) => ({ ...v, score: 0.5 + i / 10, macroF1: 0.4 + i / 10, examples: 580 })),
      lora: null,
      variants: [
        { name: 'fp32', method: 'fp32', score: 0.9, macroF1: 0.8765, perplexity: null, drop: 0, bound: null, flips: null, bytes: 2048, published: true, rejectedReason: null, prefix: 'runs/x/global/r000001' },
        { name: 'int8', method: 'int8-dynamic', score: 0.895, macroF1: 0.8712, perplexity: null, drop: 0.005, bound: 0.01, flips: 3, bytes: 1024, published: true, rejectedReason: null, prefix: 'runs/x/models/int8' },
      ],
    };
    const html = renderFamilyReportHtml(cls);
    expect(points(html, 'validation macro F1').map((p) => p.y)).toEqual(cls.valHistory.map((v) => v.macroF1));
    expect(html).toContain('<th>macro F1</th>');
    expect(html).toContain('<td>89.50%</td><td>0.8712</td><td>0.50</td><td>1.00</td><td>3</td><td>1.0 KiB</td><td>published</td>');
    expect(html).toContain('every validation document (580)');
    expect(html).not.toContain('LoRA fine-tune');
  });

  test('pretraining (BERT mlm, T5 span-corruption): loss curves, perplexity per round as a chart and a table, no variant table', () => {
    const mlm: FamilyReport = {
      ...seq2seq,
      task: 'mlm',
      model: { family: 'bert', params: 1000, config: {} },
      checkpoint: 'runs/x/global/r000004',
      valHistory: val.map((v) => ({ ...v, score: null, macroF1: null, examples: 0 })),
      lora: null,
      variants: [],
      config: { name: 'bert-mlm', training: { evalBatches: 8, batchSize: 8, contextLength: 64 } },
    };
    const html = renderFamilyReportHtml(mlm);
    expect(points(html, 'validation loss').map((p) => p.y)).toEqual(val.map((v) => v.loss));
    expect(points(html, 'train loss (mean of round)').map((p) => p.y)).toEqual(train.map((p) => p.loss));
    expect(points(html, 'validation masked-token perplexity').map((p) => p.y)).toEqual(val.map((v) => v.perplexity));
    expect(html).toContain('Validation masked-token perplexity 270.4 → 13.46, loss 5.6 → 2.6 (4 rounds).');
    expect(html).toContain('masked positions (15% of the tokens, seeded) of the first 8 val batches of 8 rows × 64 tokens');
    expect(html).toContain('<tr><td>0</td><td>-</td><td>5.6</td><td>270.4</td></tr><tr><td>1</td><td>4.3</td><td>4.85</td><td>127.7</td></tr>');
    expect(html).not.toContain('quantized variants');
    expect(html).not.toContain('exact match');
    const text = renderFamilyReportText(mlm).split('\n');
    expect(text.slice(1, 6)).toEqual(['Validation masked-token perplexity 270.4 → 13.46, loss 5.6 → 2.6 (4 rounds).', '', 'round  train loss  val loss   val ppl', '    0           -       5.6     270.4', '    1         4.3      4.85     127.7']);

    const span = renderFamilyReportHtml({ ...mlm, task: 'span-corruption', model: { family: 't5', params: 1000, config: {} } });
    expect(points(span, 'validation span-corruption target perplexity').map((p) => p.y)).toEqual(val.map((v) => v.perplexity));
    expect(span).toContain('Validation span-corruption target perplexity 270.4 → 13.46');
    expect(span).toContain('No quantization or LoRA stage runs on a t5 span-corruption model yet.');
  });
});
