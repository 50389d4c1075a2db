// The dynamic loader's view of shared libraries: `ldd` on a library that exists (it resolves every
// DT_NEEDED entry the way dlopen will, LD_LIBRARY_PATH and rpath included), `ldconfig -p` plus
// LD_LIBRARY_PATH for a library we only know by name. Never guessed from file names alone.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { splitSoname } from '../runtime/cuda-libs';

export interface ResolvedLib {
  soname: string;
  /** Where the loader finds it; null: "not found". */
  path: string | null;
}

/** Output of a tool we ran, or why it could not run. */
type Ran = { ok: true; stdout: string } | { ok: false; error: string };

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Ran {
  try {
    return { ok: true, stdout: execFileSync(cmd, args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 }) };
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string; stdout?: string };
    if (err.code === 'ENOENT') return { ok: false, error: `${cmd} is not installed` };
    const text = `${err.stdout ?? ''}${err.stderr ?? ''}`.trim();
    return { ok: false, error: text || err.message };
  }
}

/**
 * Parses `ldd` output: "libcudnn.so.9 => not found", "libc.so.6 => /lib/.../libc.so.6 (0x...)".
 * The vDSO and the interpreter line (no "=>") are not libraries anyone installs and are left out.
 */
export function parseLdd(stdout: string): ResolvedLib[] {
  const libs: ResolvedLib[] = [];
  for (const line of stdout.split('\n')) {
    const m = /^\s*(\S+)\s+=>\s+(not found|\S+)/.exec(line);
    if (m) libs.push({ soname: m[1]!, path: m[2] === 'not found' ? null : m[2]! });
  }
  return libs;
}

/** Every library `file` needs, transitively, as the loader resolves them with `env` (LD_LIBRARY_PATH). */
export function lddNeeds(file: string, env: NodeJS.ProcessEnv = process.env): { libs: ResolvedLib[] } | { error: string } {
  const r = run('ldd', [file], env);
  // ldd exits 1 when a library is missing on some libcs but still prints the list.
  if (!r.ok && !/=>/.test(r.error)) return { error: `ldd ${file}: ${r.error}` };
  return { libs: parseLdd(r.ok ? r.stdout : r.error) };
}

/** Parses `ldconfig -p`: "\tlibcudnn.so.9 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcudnn.so.9". */
export function parseLdconfig(stdout: string): Map<string, string[]> {
  const cache = new Map<string, string[]>();
  for (const line of stdout.split('\n')) {
    const m = /^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S+)/.exec(line);
    if (!m) continue;
    // A 64-bit process loads only x86-64/aarch64 entries; the 32-bit ones would never be used.
    if (process.arch === 'x64' && !m[2]!.includes('x86-64')) continue;
    cache.set(m[1]!, [...(cache.get(m[1]!) ?? []), m[3]!]);
  }
  return cache;
}

/** The loader's cache (`ldconfig -p`; ldconfig lives in /sbin, which a non-root PATH may lack). */
export function ldconfigCache(env: NodeJS.ProcessEnv = process.env): { cache: Map<string, string[]> } | { error: string } {
  for (const cmd of ['ldconfig', '/sbin/ldconfig', '/usr/sbin/ldconfig']) {
    const r = run(cmd, ['-p'], env);
    if (r.ok) return { cache: parseLdconfig(r.stdout) };
    if (!/is not installed/.test(r.error)) return { error: `ldconfig -p: ${r.error}` };
  }
  return { error: 'ldconfig is not installed' };
}

const ldLibraryPath = (env: NodeJS.ProcessEnv) => (env.LD_LIBRARY_PATH ?? '').split(':').filter((d) => d !== '');

/**
 * Where dlopen would find `soname` without a library that names it: LD_LIBRARY_PATH first, then
 * the cache (the default folders /lib and /usr/lib are in the cache on every distribution we know).
 */
export function resolveByName(soname: string, cache: Map<string, string[]>, env: NodeJS.ProcessEnv = process.env): { path: string; via: 'LD_LIBRARY_PATH' | 'ldconfig' } | null {
  for (const dir of ldLibraryPath(env)) {
    const p = path.join(dir, soname);
    if (fs.existsSync(p)) return { path: p, via: 'LD_LIBRARY_PATH' };
  }
  const hit = cache.get(soname)?.[0];
  return hit ? { path: hit, via: 'ldconfig' } : null;
}

/** The full version a library's real file name tells: /usr/lib/libcudnn.so.9 → libcudnn.so.9.1.0 → '9.1.0'. */
export function versionOfFile(p: string): string | null {
  let real = p;
  try {
    real = fs.realpathSync(p);
  } catch {
    // A dangling link still has a name that may carry the version.
  }
  return splitSoname(path.basename(real))?.version ?? splitSoname(path.basename(p))?.version ?? null;
}

/** Cache entries of the same library with another major (libcudnn.so.8 when libcudnn.so.9 is wanted). */
export function otherMajors(soname: string, cache: Map<string, string[]>): string[] {
  const want = splitSoname(soname);
  if (!want) return [];
  const found: string[] = [];
  for (const [name, paths] of cache) {
    const s = splitSoname(name);
    if (s && s.base === want.base && name !== soname && /^\d+$/.test(s.version)) found.push(`${name} (${paths[0]})`);
  }
  return found.sort();
}

/** Folders where CUDA and cuDNN land when installed outside the loader's path (toolkit runfiles, pip wheels). */
export function offPathDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const dirs = new Set<string>();
  for (const v of [env.CUDA_HOME, env.CUDA_PATH]) if (v) dirs.add(path.join(v, 'lib64'));
  const listDir = (d: string) => {
    try {
      return fs.readdirSync(d);
    } catch {
      return [];
    }
  };
  for (const name of listDir('/usr/local')) {
    if (name === 'cuda' || /^cuda-\d+(\.\d+)?$/.test(name)) {
      dirs.add(path.join('/usr/local', name, 'lib64'));
      dirs.add(path.join('/usr/local', name, 'targets', `${process.arch === 'arm64' ? 'sbsa' : 'x86_64'}-linux`, 'lib'));
    }
  }
  // pip's nvidia-*-cu12 wheels: <site-packages>/nvidia/<lib>/lib.
  for (const root of ['/usr/local/lib', '/usr/lib']) {
    for (const py of listDir(root).filter((n) => /^python3(\.\d+)?$/.test(n))) {
      for (const sp of ['site-packages', 'dist-packages']) {
        const nv = path.join(root, py, sp, 'nvidia');
        for (const lib of listDir(nv)) dirs.add(path.join(nv, lib, 'lib'));
      }
    }
  }
  return [...dirs];
}

/** Copies of `soname` the loader does not see (it exists on disk, just not on the loader's path). */
export function findOffPath(soname: string, env: NodeJS.ProcessEnv = process.env): string[] {
  return offPathDirs(env)
    .map((d) => path.join(d, soname))
    .filter((p) => fs.existsSync(p));
}
