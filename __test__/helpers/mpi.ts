// What the MPI specs share: whether MPI can run here, and a launcher of a rank script on N ranks.
import { execFile, execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { loadMpiBinding } from '../../lib/distributed'

/** Why MPI tests cannot run here, or undefined when they can. */
export function mpiMissing(): string | undefined {
  try {
    execFileSync('mpirun', ['--version'], { stdio: 'pipe' })
  } catch {
    return 'mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)'
  }
  try {
    loadMpiBinding()
  } catch (error) {
    return (error as Error).message
  }
  return undefined
}

export interface MpiRun<T> {
  code: number | null
  output: string
  results: T[]
}

/**
 * Runs `script` with `args` on `size` MPI ranks (`mpirun --oversubscribe` on localhost), each rank
 * writing its result to `<args' last>.<rank>.json`, where the last argument is a path prefix this
 * adds; resolves when mpirun ends, however it ends, with the results of the ranks that finished.
 */
export function mpirun<T>(size: number, script: string, args: string[]): Promise<MpiRun<T>> {
  const dir = mkdtempSync(join(tmpdir(), 'fastoptim-mpi-'))
  const out = join(dir, 'rank')
  const argv = ['--oversubscribe', '--allow-run-as-root', '-np', String(size)]
  argv.push(process.execPath, '--import=tsx', script, ...args, out)
  return new Promise((resolve) => {
    execFile('mpirun', argv, { encoding: 'utf8' }, (error, stdout, stderr) => {
      const results: T[] = []
      for (let r = 0; r < size; r++) {
        try {
          results.push(JSON.parse(readFileSync(`${out}.${r}.json`, 'utf8')))
        } catch {
          // A rank that did not finish wrote nothing.
        }
      }
      rmSync(dir, { recursive: true, force: true })
      const code = error ? ((error as { code?: number }).code ?? 1) : 0
      resolve({ code, output: stdout + stderr, results })
    })
  })
}
