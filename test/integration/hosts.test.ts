// Workers on separate hosts, with real network isolation: each host is a Linux network namespace
// (test/helpers/netns.ts) whose only links are its loopback and a veth pair to a bridge in the
// stack host's namespace. Nothing here talks to an address outside the namespaces the test made:
//
//   stack host  `truthgpt up --bind 0.0.0.0 --no-workers`: Temporal dev server (SQLite) + S3
//               server on every interface of its namespace (loopback and its bridge, 10.213.K.1),
//               no workers; the CLI's `run` and `wait` run here too, over its loopback
//   host A      `truthgpt worker --pool gpu`  reaching 10.213.K.1 over its link only
//   host B      `truthgpt worker --pool cpu`  (the workflows and the CPU activities)
//
//   1. Isolation: on host A the local defaults (127.0.0.1) reach nothing, and `truthgpt worker`
//      says in one line which part it cannot reach and where.
//   2. A W=2 DiLoCo run with no fault: the reference sha256 of every final checkpoint file.
//   3. Host A is lost mid-round (SIGKILL of every process in its namespace) and comes back (its
//      `truthgpt worker` started again): the shard is retried on it, resumes from its snapshot,
//      and the run ends with the reference checkpoint, byte for byte.
//   4. Host A is lost for good. With one gpu-pool host the gpu work could go nowhere, so host B
//      also runs the gpu pool here (a second `truthgpt worker --pool gpu` on it): the lost host's
//      shard moves to B, which finishes the run, again with the reference checkpoint.
//
// Root and the `ip` tool are needed; without them the test is skipped with the reason, except in
// CI (CI set, or TRUTHGPT_REQUIRE_NETNS=1 from .ci/run), where that is a failure.

import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TrainShardResult } from '../../activities/training';
import { keys } from '../../artifacts/keys';
import type { WaitOutcome } from '../../sdk/cli/run-commands';
import { findTemporalCli } from '../../infra/temporal';
import { cleanupLeftovers, createTestNetwork, killNetns, netnsPids, netnsRequired, netnsUnavailable, type NetHost, type TestNetwork } from '../helpers/netns';
import { LONG_SHARD_SNAPSHOT_EVERY, LONG_SHARD_STEPS, longShardSpec } from '../helpers/long-shard-spec';

const REPO = path.resolve(__dirname, '../..');
const CLI = path.join(REPO, 'bin/truthgpt.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Two rounds of H steps per shard, a snapshot every EVERY steps: each trainShard runs for
// seconds, long enough to lose its host in the middle. A silent host is given up after the
// heartbeat timeout.
const H = LONG_SHARD_STEPS;
const EVERY = LONG_SHARD_SNAPSHOT_EVERY;
const spec = longShardSpec({ name: 'hosts', workers: 2, heartbeatTimeoutSeconds: 5 });

type Completed = Extract<WaitOutcome, { status: 'completed' }>;
const shas = (r: Completed) => Object.fromEntries(Object.entries(r.checkpoint.files).map(([n, f]) => [n, f.sha256]));

/** A `truthgpt worker` process on a host, its output collected line by line. */
interface HostWorker {
  child: ChildProcess;
  out: string[];
  /** pid of each worker process by slot name, from the ready line. */
  pids: Record<string, number>;
}

const unavailable = netnsUnavailable();

if (unavailable && netnsRequired()) {
  test('hosts on separate network namespaces (required here)', () => {
    throw new Error(`cannot run the multi-host test: ${unavailable}; it is required in CI (CI or TRUTHGPT_REQUIRE_NETNS=1)`);
  });
} else if (unavailable) {
  console.warn(`test/integration/hosts.test.ts skipped: ${unavailable} (TRUTHGPT_REQUIRE_NETNS=1 makes that a failure)`);
  test.skip(`hosts on separate network namespaces: skipped, ${unavailable}`, () => {});
} else {
  describe('workers on separate hosts (network namespaces)', () => {
    let net: TestNetwork;
    let dir: string;
    let server: NetHost;
    let hostA: NetHost;
    let hostB: NetHost;
    let serverEnv: NodeJS.ProcessEnv;
    let hostEnv: NodeJS.ProcessEnv;
    let bucketDir: string;
    let s3Kind: string;
    let specFile: string;
    let reference: Completed;
    /** Poller identity of host A's gpu worker, once it is back (test 3). */
    let aGpuIdentity: string;
    const workers: HostWorker[] = [];

    /** This process's env without any stack setting: each host gets only what the test gives it. */
    const cleanEnv = (): NodeJS.ProcessEnv => {
      const env: NodeJS.ProcessEnv = {};
      // The tools' locations stay (TEMPORAL_CLI_PATH, VERSITYGW_PATH, TRUTHGPT_CACHE_DIR): nothing can be built without a network.
      for (const [k, v] of Object.entries(process.env)) if (!/^(TEMPORAL_(?!CLI_PATH$)|TRUTHGPT_(?!CACHE_DIR$))/.test(k)) env[k] = v;
      env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
      return env;
    };

    const cliIn = (host: NetHost, env: NodeJS.ProcessEnv, ...args: string[]) => net.execIn(host, process.execPath, [CLI, ...args], { env, cwd: REPO, timeoutMs: 300_000 });

    /** Starts `truthgpt worker` on `host` and waits for its ready line. */
    async function startWorker(host: NetHost, stateDir: string, ...pools: string[]): Promise<HostWorker> {
      const child = net.spawnIn(host, process.execPath, [CLI, 'worker', ...pools.flatMap((p) => ['--pool', p]), '--state-dir', stateDir], { env: hostEnv, cwd: REPO });
      const w: HostWorker = { child, out: [], pids: {} };
      workers.push(w);
      const collect = (d: Buffer) => w.out.push(...d.toString().split('\n').filter(Boolean));
      child.stdout!.on('data', collect);
      child.stderr!.on('data', collect);
      const deadline = Date.now() + 240_000;
      for (;;) {
        const ready = w.out.find((l) => l.includes('truthgpt worker ready'));
        if (ready) {
          for (const m of ready.matchAll(/(\w+\.\d+) pid (\d+)/g)) w.pids[m[1]] = Number(m[2]);
          return w;
        }
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`truthgpt worker on ${host.ns} did not get ready (exit ${child.exitCode}):\n${w.out.join('\n')}`);
        await sleep(100);
      }
    }

    async function run(id: string): Promise<string> {
      const r = await cliIn(server, serverEnv, 'run', specFile, '--detach', '--id', id);
      if (r.code !== 0) throw new Error(`truthgpt run: ${r.stderr}`);
      return r.stdout.trim();
    }

    async function wait(id: string): Promise<Completed> {
      const r = await cliIn(server, serverEnv, 'wait', id, '--json');
      if (r.code !== 0 && !r.stdout) throw new Error(`truthgpt wait ${id}: ${r.stderr}`);
      const out = JSON.parse(r.stdout) as WaitOutcome;
      if (out.status !== 'completed') throw new Error(`${id} failed: ${JSON.stringify(out.error)}`);
      return out;
    }

    /** The bytes of an object as the stack host's S3 server keeps them on disk (the test reads no S3 over the network). */
    const objectFile = (key: string) => path.join(bucketDir, s3Kind === 's3rver' ? `${key}._S3rver_object` : key);

    /** Waits until `shards` of run `id`'s round-1 shards have a committed snapshot at the same time. */
    async function waitForRound1Snapshots(id: string, shards: number): Promise<void> {
      const deadline = Date.now() + 240_000;
      const shardsDir = path.join(bucketDir, 'runs', id, 'shards');
      for (;;) {
        const found = [0, 1].filter((shard) => {
          const round = path.join(shardsDir, `s${shard}`, 'r000001');
          return fs.existsSync(round) && fs.readdirSync(round).some((d) => d.startsWith('step-') && fs.existsSync(objectFile(`${keys.shardProgress(id, shard, 1, Number(d.slice(5)))}/MANIFEST.json`)));
        });
        if (found.length >= shards) return;
        if (Date.now() > deadline) throw new Error(`no round-1 snapshot of ${id} within 240 s`);
        await sleep(25);
      }
    }

    /**
     * Waits until round 1 of run `id` has started and host A's worker (`identity`) is running one
     * of its trainShard attempts, as Temporal sees it (the workflow's pending activities).
     */
    async function waitForRound1ShardOn(id: string, identity: string): Promise<void> {
      const deadline = Date.now() + 240_000;
      const round1 = objectFile(`runs/${id}/global/r000001/MANIFEST.json`);
      for (;;) {
        if (fs.existsSync(round1)) {
          type Pending = { activityType?: { name?: string }; state?: string; lastWorkerIdentity?: string };
          const d = (await temporalJson(['workflow', 'describe', '--workflow-id', id])) as { pendingActivities?: Pending[] };
          const running = (d.pendingActivities ?? []).some((p) => p.activityType?.name === 'trainShard' && /STARTED/i.test(String(p.state)) && p.lastWorkerIdentity === identity);
          if (running) return;
        }
        if (Date.now() > deadline) throw new Error(`host A (${identity}) ran no trainShard of round 1 of ${id} within 240 s`);
        await sleep(50);
      }
    }

    const shardResult = (id: string, shard: number, round: number) => {
      const manifest = JSON.parse(fs.readFileSync(objectFile(`${keys.shardFinal(id, shard, round)}/MANIFEST.json`), 'utf8')) as { meta: { result: TrainShardResult } };
      return manifest.meta.result;
    };

    /** The Temporal CLI's JSON answer, asked on the stack host over its loopback. */
    async function temporalJson(args: string[]): Promise<unknown> {
      const r = await net.execIn(server, findTemporalCli()!, [...args, '--address', '127.0.0.1:7233', '--output', 'json'], { env: serverEnv, cwd: REPO });
      if (r.code !== 0) throw new Error(`temporal ${args.join(' ')}: ${r.stderr}`);
      return JSON.parse(r.stdout);
    }

    /** trainShard attempts as the workflow's history records them: the last attempt's worker identity and number. */
    async function trainShardAttempts(id: string): Promise<{ identity: string; attempt: number }[]> {
      type Event = { eventId: string; activityTaskScheduledEventAttributes?: { activityType: { name: string } }; activityTaskStartedEventAttributes?: { scheduledEventId: string; identity: string; attempt: number } };
      const events = ((await temporalJson(['workflow', 'show', '--workflow-id', id])) as { events: Event[] }).events;
      const scheduled = new Map(events.filter((e) => e.activityTaskScheduledEventAttributes).map((e) => [String(e.eventId), e.activityTaskScheduledEventAttributes!.activityType.name]));
      return events
        .filter((e) => e.activityTaskStartedEventAttributes && scheduled.get(String(e.activityTaskStartedEventAttributes.scheduledEventId)) === 'trainShard')
        .map((e) => ({ identity: e.activityTaskStartedEventAttributes!.identity, attempt: Number(e.activityTaskStartedEventAttributes!.attempt) }));
    }

    beforeAll(async () => {
      const stale = await cleanupLeftovers();
      if (stale.length) console.log(`removed network namespaces of an earlier crashed run: ${stale.join(', ')}`);
      net = await createTestNetwork(2);
      ({ server } = net);
      [hostA, hostB] = net.hosts;
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-hosts-'));
      s3Kind = process.env.TRUTHGPT_S3_SERVER || 's3rver';
      // The stack host: every port is its own (a namespace has its own port space), so the defaults do.
      serverEnv = { ...cleanEnv(), TRUTHGPT_STATE_DIR: path.join(dir, 'stack'), TRUTHGPT_BIND_HOST: '0.0.0.0', TRUTHGPT_S3_SERVER: s3Kind };
      bucketDir = path.join(dir, 'stack', s3Kind === 's3rver' ? 's3' : 's3-versitygw', 'truthgpt');
      // What README "Add a host to a running stack" tells a new host to set.
      hostEnv = {
        ...cleanEnv(),
        TEMPORAL_ADDRESS: `${server.address}:7233`,
        TRUTHGPT_S3_ENDPOINT: `http://${server.address}:4568`,
        TRUTHGPT_S3_ACCESS_KEY_ID: 'S3RVER',
        TRUTHGPT_S3_SECRET_ACCESS_KEY: 'S3RVER',
      };
      specFile = path.join(dir, 'spec.json');
      fs.writeFileSync(specFile, JSON.stringify(spec));
      const up = await cliIn(server, serverEnv, 'up', '--no-workers', '--timeout', '240');
      if (up.code !== 0) throw new Error(`truthgpt up on the stack host: ${up.stderr}`);
    }, 420_000);

    afterAll(async () => {
      // Every process of every namespace (servers, supervisors, workers), then the namespaces and their links.
      await net?.teardown();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    }, 120_000);

    test('a host reaches only its link: the local defaults reach nothing, and `truthgpt worker` names what it cannot reach', async () => {
      const env = cleanEnv();
      const noTemporal = await cliIn(hostA, env, 'worker', '--pool', 'gpu', '--state-dir', path.join(dir, 'probe'));
      expect(noTemporal.code).toBe(1);
      expect(noTemporal.stderr.trim().split('\n')).toHaveLength(1);
      expect(noTemporal.stderr).toMatch(/^truthgpt: cannot reach Temporal at 127\.0\.0\.1:7233 \(TEMPORAL_ADDRESS unset/);

      const noS3 = await cliIn(hostA, { ...hostEnv, TRUTHGPT_S3_ENDPOINT: `http://${server.address}:9` }, 'worker', '--pool', 'gpu', '--state-dir', path.join(dir, 'probe'));
      expect(noS3.code).toBe(1);
      expect(noS3.stderr.trim().split('\n')).toHaveLength(1);
      expect(noS3.stderr).toContain(`truthgpt: cannot reach S3 at http://${server.address}:9 (TRUTHGPT_S3_ENDPOINT; bucket truthgpt)`);
      // Both probes exited and left nothing behind on the host.
      expect(await netnsPids(hostA.ns)).toEqual([]);
    }, 120_000);

    test('W=2 DiLoCo with the gpu pool on host A and the cpu pool on host B: the reference run', async () => {
      const [a, b] = await Promise.all([startWorker(hostA, path.join(dir, 'a'), 'gpu'), startWorker(hostB, path.join(dir, 'b'), 'cpu')]);
      expect(Object.keys(a.pids)).toEqual(['gpu.0']);
      expect(Object.keys(b.pids)).toEqual(['workflows.0', 'cpu.0']);
      const t0 = Date.now();
      reference = await wait(await run('hosts-reference'));
      console.log(`hosts: reference run ${((Date.now() - t0) / 1000).toFixed(1)} s (workflow wall ${(reference.wallMs / 1000).toFixed(1)} s, round ms ${reference.trainHistory.map((p) => p.roundMs).join(', ')})`);
      expect(Object.keys(shas(reference)).sort()).toEqual(['checkpoint.json', 'model.safetensors', 'optimizer.safetensors']);
      expect(reference.valHistory.map((v) => v.round)).toEqual([0, 1, 2]);
      expect(reference.valHistory[2].loss).toBeLessThan(reference.valHistory[0].loss - 1);
      const attempts = await trainShardAttempts('hosts-reference');
      expect(attempts).toHaveLength(4);
      expect(new Set(attempts.map((x) => x.identity))).toEqual(new Set([`truthgpt-gpu-${a.pids['gpu.0']}@${os.hostname()}`]));
    }, 400_000);

    test('host A is lost mid-round and comes back: the shard resumes there and the checkpoint is the reference one', async () => {
      const id = await run('hosts-return');
      // A runs the round's two shards one after the other: lose it once the first has a snapshot.
      await waitForRound1Snapshots(id, 1);
      const killedAt = Date.now();
      const killed = await killNetns(hostA.ns);
      expect(killed.length).toBeGreaterThanOrEqual(2); // the supervisor and its gpu worker
      expect(await netnsPids(hostA.ns)).toEqual([]);
      const back = await startWorker(hostA, path.join(dir, 'a'), 'gpu');
      const readyMs = Date.now() - killedAt;
      const r = await wait(id);
      const doneMs = Date.now() - killedAt;

      // The retried shard resumed from a committed snapshot of round 1, on the host that came back.
      const resumed = [0, 1].map((s) => shardResult(id, s, 1)).filter((x) => x.resumedFrom !== null);
      expect(resumed).toHaveLength(1);
      expect(resumed[0].resumedFrom!).toBeGreaterThanOrEqual(H + EVERY);
      expect(resumed[0].resumedFrom!).toBeLessThan(2 * H);
      aGpuIdentity = `truthgpt-gpu-${back.pids['gpu.0']}@${os.hostname()}`;
      const attempts = await trainShardAttempts(id);
      const retried = attempts.filter((x) => x.attempt > 1);
      expect(retried.map((x) => x.identity)).toEqual([aGpuIdentity]);

      expect(shas(r)).toEqual(shas(reference));
      expect(r.valHistory.map((v) => v.loss)).toEqual(reference.valHistory.map((v) => v.loss));
      const extra = r.trainHistory[1].roundMs - reference.trainHistory[1].roundMs;
      console.log(
        `hosts: host A lost and back: worker ready again ${(readyMs / 1000).toFixed(1)} s after the kill, run done ${(doneMs / 1000).toFixed(1)} s after it; ` +
          `round 1 took ${(r.trainHistory[1].roundMs / 1000).toFixed(1)} s vs ${(reference.trainHistory[1].roundMs / 1000).toFixed(1)} s uninterrupted (+${(extra / 1000).toFixed(1)} s); resumed from step ${resumed[0].resumedFrom}`,
      );
    }, 400_000);

    test('host A is lost for good: its shard moves to host B, which finishes the run with the reference checkpoint', async () => {
      // B takes the gpu pool as well, beside its cpu worker: a second `truthgpt worker` on it.
      const bGpu = await startWorker(hostB, path.join(dir, 'b-gpu'), 'gpu');
      const bIdentity = `truthgpt-gpu-${bGpu.pids['gpu.0']}@${os.hostname()}`;
      const id = await run('hosts-lost');
      // A and B each take one shard of the round: lose A while it runs its own.
      await waitForRound1ShardOn(id, aGpuIdentity);
      const killedAt = Date.now();
      await killNetns(hostA.ns);
      expect(await netnsPids(hostA.ns)).toEqual([]);
      const r = await wait(id);
      const doneMs = Date.now() - killedAt;

      // Nothing runs on A any more; the round's shards were finished by B, one of them a retry of A's.
      expect(await netnsPids(hostA.ns)).toEqual([]);
      const attempts = await trainShardAttempts(id);
      const round1 = attempts.slice(2);
      expect(round1.map((x) => x.identity)).toEqual([bIdentity, bIdentity]);
      expect(Math.max(...round1.map((x) => x.attempt))).toBeGreaterThan(1);
      // A's shard resumed from its snapshot when A had committed one before it was lost, else it started over.
      const resumedFrom = [0, 1].map((s) => shardResult(id, s, 1).resumedFrom);

      expect(shas(r)).toEqual(shas(reference));
      const extra = r.trainHistory[1].roundMs - reference.trainHistory[1].roundMs;
      console.log(
        `hosts: host A lost for good: run done ${(doneMs / 1000).toFixed(1)} s after the kill; round 1 took ${(r.trainHistory[1].roundMs / 1000).toFixed(1)} s ` +
          `vs ${(reference.trainHistory[1].roundMs / 1000).toFixed(1)} s uninterrupted on one gpu host (${extra >= 0 ? '+' : ''}${(extra / 1000).toFixed(1)} s); shards resumed from ${JSON.stringify(resumedFrom)}`,
      );
    }, 400_000);
  });
}
