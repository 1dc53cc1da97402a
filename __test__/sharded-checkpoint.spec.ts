// ShardedOptimizer's whole state (stateDict, loadStateDict, getState) and sharded checkpoints in
// torch.distributed.checkpoint's Hugging Face safetensors layout, over worker-thread ranks: saved
// on some number of ranks and loaded on others (resharded), PyTorch's own checkpoint
// (__test__/fixtures/sharded, made by scripts/gen_fixtures_sharded.py on 2 gloo processes) loaded
// on 1, 2 and 4 ranks and trained on to PyTorch's numbers, fastoptim's read by PyTorch (when
// python3 with torch is installed), and a save that a rank's crash interrupts at each of its
// collectives, which leaves the old checkpoint or none, never part of one.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import { INDEX_FILE, runWorkers, shardFileName } from '../lib/distributed'
import { boxesOf } from '../lib/distributed/checkpoint'
import { maxRelativeError } from './helpers/fixtures'
import { mpiMissing, mpirun as launch } from './helpers/mpi'
import {
  MODEL,
  NAMES,
  TORCH_CHECKPOINT,
  TORCH_FIXTURE,
  type Job,
  type RankResult,
  type TorchFixture,
} from './helpers/sharded-checkpoint-rank'

const RANK_SCRIPT = join(__dirname, 'helpers', 'sharded-checkpoint-rank.ts')

function onWorkers(size: number, job: Job): Promise<RankResult[]> {
  return runWorkers<RankResult>(size, RANK_SCRIPT, { workerData: { job }, preload: ['tsx/cjs'], timeoutMs: 20_000 })
}

function scratch(t: { teardown: (f: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'fastoptim-sharded-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Every rank reports the same whole state; returns it. */
function agreed(t: { deepEqual: (a: unknown, b: unknown, m?: string) => void }, results: RankResult[]): RankResult {
  for (const r of results.slice(1)) {
    t.deepEqual(r.state, results[0].state, `rank ${r.rank}'s state`)
    t.deepEqual(r.groups, results[0].groups, `rank ${r.rank}'s groups`)
    t.deepEqual(r.first, results[0].first, `rank ${r.rank}'s getState`)
  }
  return { ...results[0], rank: -1 }
}

test('a flat range of a tensor is cut into rectangles, contiguous and in order, at most 2d - 1 of them', (t) => {
  for (const shape of [[10], [7, 5], [3, 7], [2, 3, 4], [4, 1, 3, 2]]) {
    const n = shape.reduce((a, b) => a * b, 1)
    const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1))
    for (let start = 0; start <= n; start++) {
      for (let end = start; end <= n; end++) {
        const boxes = boxesOf(shape, start, end)
        t.true(boxes.length <= 2 * shape.length - 1)
        let next = start
        for (const { offsets, sizes } of boxes) {
          t.true(offsets.every((o, d) => o >= 0 && o + sizes[d] <= shape[d]))
          // A box is contiguous when all but its leading non-unit dimension are whole.
          const first = offsets.reduce((flat, o, d) => flat + o * strides[d], 0)
          const count = sizes.reduce((a, b) => a * b, 1)
          t.is(first, next)
          const lead = sizes.findIndex((s) => s > 1)
          t.true(lead < 0 || sizes.slice(lead + 1).every((s, i) => s === shape[lead + 1 + i]))
          next += count
        }
        t.is(next, end)
      }
    }
  }
  t.is(shardFileName(0, 1, 3), 'shard-00001-model-00002-of-00003.safetensors')
})

test.serial(
  'stateDict on 2 ranks loads with loadStateDict into 4 and 1, and getState is the whole state',
  async (t) => {
    const dir = scratch(t)
    const saved = agreed(t, await onWorkers(2, { kind: 'save', dir: join(dir, 'ckpt'), steps: 3, names: true }))
    t.is(Object.keys(saved.state!).length, MODEL.length)
    t.is((saved.state![0].expAvg as number[]).length, 35)
    t.deepEqual(saved.first, saved.state![0])
    t.deepEqual(
      saved.groups!.map((g) => [g.lr, g.params]),
      [
        [0.01, [0, 1, 2, 3]],
        [0.005, [4, 5]],
      ],
    )
    for (const size of [4, 1]) {
      const loaded = agreed(t, await onWorkers(size, { kind: 'load-dict', state: saved.state!, groups: saved.groups! }))
      t.is(loaded.error, undefined)
      t.deepEqual(loaded.state, saved.state, `${size} ranks`)
      t.deepEqual(loaded.groups, saved.groups, `${size} ranks`)
    }
    // A buffer of the wrong length: every rank refuses, and none changes.
    const bad = structuredClone(saved.state!)
    ;(bad[5].expAvg as number[]).pop()
    const refused = await onWorkers(4, { kind: 'load-dict', state: bad, groups: saved.groups! })
    for (const r of refused) {
      t.regex(r.error ?? '', /stateDict\.state\[5\]\.expAvg|could not load/, `rank ${r.rank}`)
      t.deepEqual(r.state, {})
    }
  },
)

for (const [from, to] of [
  [2, 4],
  [2, 1],
  [4, 2],
  [1, 3],
]) {
  test.serial(`a sharded checkpoint saved on ${from} ranks loads on ${to}, the same state`, async (t) => {
    const dir = join(scratch(t), 'ckpt')
    const names = from !== 4
    // A trailing slash names the same directory.
    const saved = agreed(t, await onWorkers(from, { kind: 'save', dir: to === 1 ? `${dir}/` : dir, steps: 3, names }))
    const files = readdirSync(dir).sort()
    const index = JSON.parse(readFileSync(join(dir, INDEX_FILE), 'utf8'))
    t.deepEqual(files, [...index.metadata.files, INDEX_FILE].sort())
    t.true(files.every((f) => f === INDEX_FILE || /^shard-\d{5}-model-\d{5}-of-\d{5}\.safetensors$/.test(f)))
    t.is(index.metadata.world_size, from)
    // Every tensor is in the weight map: buffers and steps of every parameter, by name or position.
    const label = (k: number) => (names ? NAMES[k] : String(k))
    const expected = MODEL.flatMap((_, k) =>
      ['step', 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'].map((key) => `state.${label(k)}.${key}`),
    )
    t.deepEqual(Object.keys(index.weight_map).sort(), expected.sort())
    const loaded = agreed(t, await onWorkers(to, { kind: 'load', dir, names }))
    t.is(loaded.error, undefined)
    t.deepEqual(loaded.state, saved.state)
    t.deepEqual(loaded.groups, saved.groups, "the checkpoint's options replace the optimizer's")
    t.log(`${from} ranks wrote ${files.length - 1} files`)
  })
}

test.serial(
  'loading refuses names the checkpoint does not have, and a listed file that is missing; no rank changes',
  async (t) => {
    const dir = join(scratch(t), 'ckpt')
    await onWorkers(2, { kind: 'save', dir, steps: 2, names: true })
    for (const r of await onWorkers(2, { kind: 'load', dir, names: false })) {
      t.regex(r.error ?? '', /is not state\.<name>\.<key> of a parameter named "0", "1"|could not load/)
      t.deepEqual(r.state, {})
    }
    const index = JSON.parse(readFileSync(join(dir, INDEX_FILE), 'utf8'))
    rmSync(join(dir, index.metadata.files[0]))
    for (const r of await onWorkers(2, { kind: 'load', dir, names: true })) {
      t.regex(r.error ?? '', /which the index lists, is missing/)
      t.deepEqual(r.state, {})
    }
  },
)

const torchFixture = JSON.parse(readFileSync(TORCH_FIXTURE, 'utf8')) as TorchFixture

for (const size of [1, 2, 4]) {
  test.serial(
    `PyTorch's sharded checkpoint (2 gloo ranks) loads on ${size} ranks and trains on to PyTorch's numbers`,
    async (t) => {
      const results = await onWorkers(size, { kind: 'torch', dir: TORCH_CHECKPOINT, fixture: TORCH_FIXTURE })
      const loaded = agreed(t, results)
      t.is(loaded.error, undefined)
      // The state is PyTorch's, exactly.
      torchFixture.names.forEach((name, k) => {
        for (const key of ['step', 'exp_avg', 'exp_avg_sq']) {
          const camelKey = key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())
          t.deepEqual(loaded.state![k][camelKey], torchFixture.saved.state[`state.${name}.${key}`], `${name}.${key}`)
        }
      })
      const last = torchFixture.steps[torchFixture.steps.length - 1].params
      let differing = 0
      for (const r of results) {
        r.params!.forEach((values, k) => {
          t.true(maxRelativeError(values, last[k]) <= 1e-5, `rank ${r.rank}, ${torchFixture.names[k]}`)
          differing += values.filter((v, i) => v !== last[k][i]).length
        })
      }
      t.log(
        `after ${torchFixture.steps.length} more steps, ${differing} of ${size * last.flat().length} elements differ from PyTorch's`,
      )
    },
  )
}

const probe = spawnSync('python3', ['-c', 'import torch, safetensors'], { encoding: 'utf8' })
const withTorch = probe.status === 0 ? test.serial : test.serial.skip
const note = probe.status === 0 ? '' : ' (skipped: python3 with torch and safetensors is not installed)'

withTorch(
  `a checkpoint fastoptim saved on 4 ranks loads with torch.distributed.checkpoint on 2 and 1${note}`,
  async (t) => {
    const root = scratch(t)
    const dir = join(root, 'ckpt')
    const saved = agreed(t, await onWorkers(4, { kind: 'save', dir, steps: 3, names: true }))
    const state: Record<string, number[] | number> = {}
    const shapes: Record<string, number[]> = {}
    const dtypes: Record<string, string> = {}
    MODEL.forEach(({ name, shape, dtype }, k) => {
      for (const [key, value] of Object.entries(saved.state![k])) {
        const tensor = `state.${name}.${key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`
        state[tensor] = value
        shapes[tensor] = typeof value === 'number' ? [] : shape
        dtypes[tensor] = typeof value === 'number' ? 'float32' : dtype
      }
    })
    const expected = join(root, 'expected.json')
    writeFileSync(expected, JSON.stringify({ state, shapes, dtypes }))
    for (const ranks of [2, 1]) {
      const run = spawnSync(
        'python3',
        [join(__dirname, '..', 'scripts', 'gen_fixtures_sharded.py'), 'check', dir, expected, String(ranks)],
        {
          encoding: 'utf8',
        },
      )
      t.is(run.status, 0, run.stderr)
      const lines = run.stdout.trim().split('\n')
      const result = JSON.parse(lines[lines.length - 1])
      t.deepEqual(result, { ranks, tensors: Object.keys(state).length, mismatches: [] })
    }
  },
)

/** Whether `dir` holds a whole checkpoint: the index and exactly the files it lists. */
function whole(dir: string): boolean {
  const index = JSON.parse(readFileSync(join(dir, INDEX_FILE), 'utf8'))
  return JSON.stringify(readdirSync(dir).sort()) === JSON.stringify([...index.metadata.files, INDEX_FILE].sort())
}

test.serial(
  'a rank crashing at any collective of a save leaves the old checkpoint, or none, never part of one',
  async (t) => {
    const root = scratch(t)
    const before = agreed(t, await onWorkers(2, { kind: 'save', dir: join(root, 'before'), steps: 2, names: false }))
    const after = agreed(t, await onWorkers(2, { kind: 'save', dir: join(root, 'after'), steps: 4, names: false }))
    // The save's collectives on rank 1: 7 (the last after rank 0 has swapped the new checkpoint in).
    for (let crashAt = 1; crashAt <= 7; crashAt++) {
      for (const first of [false, true]) {
        const dir = join(root, `crash-${crashAt}-${first}`)
        await t.throwsAsync(onWorkers(2, { kind: 'crash', dir, crashAt, first }), undefined, `crash at ${crashAt}`)
        if (first && crashAt < 7) {
          t.false(existsSync(dir), `the first save, crashed at collective ${crashAt}, left no checkpoint`)
          continue
        }
        t.true(whole(dir), `crash at ${crashAt}: a whole checkpoint`)
        const loaded = agreed(t, await onWorkers(1, { kind: 'load', dir, names: false }))
        t.deepEqual(loaded.state, crashAt < 7 ? before.state : after.state, `crash at ${crashAt}`)
      }
    }
  },
)

// Over MPI, as __test__/distributed-mpi.spec.ts runs it: skipped, with a note, where mpirun or
// the optional package packages/distributed-mpi is missing.
const mpiAbsent = mpiMissing()
const mpiTest = mpiAbsent === undefined ? test.serial : test.serial.skip
if (mpiAbsent !== undefined)
  test('MPI sharded-checkpoint tests are skipped', (t) => {
    t.log(`skipped: ${mpiAbsent}`)
    t.pass()
  })

/** Runs `job` on `size` MPI ranks; resolves to mpirun's status and the ranks' results. */
const mpirun = (size: number, job: Job) => launch<RankResult>(size, RANK_SCRIPT, [JSON.stringify(job)])

mpiTest('MPI: a checkpoint saved on 2 ranks loads on 4 and on 1 (worker threads), the same state', async (t) => {
  const dir = join(scratch(t), 'ckpt')
  const saved = await mpirun(2, { kind: 'save', dir, steps: 3, names: true })
  t.is(saved.code, 0, saved.output)
  const want = agreed(t, saved.results)
  const loaded = await mpirun(4, { kind: 'load', dir, names: true })
  t.is(loaded.code, 0, loaded.output)
  t.deepEqual(agreed(t, loaded.results).state, want.state)
  t.deepEqual(agreed(t, await onWorkers(1, { kind: 'load', dir, names: true })).state, want.state)
})

mpiTest('MPI: a rank killed in the middle of a save leaves the old checkpoint', async (t) => {
  const root = scratch(t)
  const before = agreed(t, await onWorkers(2, { kind: 'save', dir: join(root, 'before'), steps: 2, names: false }))
  for (const crashAt of [3, 5]) {
    const dir = join(root, `killed-${crashAt}`)
    const run = await mpirun(2, { kind: 'crash', dir, crashAt, first: false, kill: true })
    t.not(run.code, 0)
    t.true(whole(dir))
    t.deepEqual(agreed(t, await onWorkers(1, { kind: 'load', dir, names: false })).state, before.state)
  }
})
