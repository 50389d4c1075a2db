// Where a committed file lives in the store. Commits are content-addressed (infra/store-manifest.ts
// writes them): `<prefix>/sha256-<hex>/<name>`, so two attempts that commit different bytes to one
// prefix never overwrite each other's files. Here, in spec/, so that workflows can name a file of
// a commit they hold a ref of (its prefix and each file's sha256) without any I/O.

/**
 * The key of file `name` with content hash `sha256` in the commit under `prefix`.
 * @example committedFileKey('runs/a/global/r000001', 'model.safetensors', 'ab…') === 'runs/a/global/r000001/sha256-ab…/model.safetensors'
 */
export function committedFileKey(prefix: string, name: string, sha256: string): string {
  return `${prefix.replace(/\/+$/, '')}/sha256-${sha256}/${name.replace(/^\/+/, '')}`;
}
