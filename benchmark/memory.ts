// `npm run bench`, part 3: memory per step.
//
// 10,000 Adam steps over one 1M tensor and over 200 tensors of 1K, on 1 and on every thread: resident
// memory sampled every 500 steps after a warm-up, and the allocations of fastoptim's Rust code
// counted by its allocator (`__allocations`, an internal export). Results:
// benchmark/results/memory.json.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { Adam, getNumThreads, setNumThreads } from '../lib'
import { native } from '../lib/native'
import { QUICK, RESULTS, values } from './common'

const internal = native as unknown as { __allocations(): { count: number; bytes: number } }
const STEPS = QUICK ? 1_000 : 10_000

function measure(name: string, sizes: number[], threads: number) {
  setNumThreads(threads)
  const opt = new Adam(sizes.map((n, i) => ({ data: values(n, 2 * i + 1), grad: values(n, 2 * i + 2) })))
  for (let i = 0; i < 200; i++) opt.step()
  ;(globalThis as { gc?: () => void }).gc?.()
  const rss: number[] = []
  const before = internal.__allocations()
  for (let i = 0; i < STEPS; i++) {
    opt.step()
    if (i % 500 === 0) rss.push(process.memoryUsage().rss)
  }
  const after = internal.__allocations()
  rss.push(process.memoryUsage().rss)
  const mib = (x: number) => Math.round((x / 2 ** 20) * 10) / 10
  const row = {
    model: name,
    threads,
    steps: STEPS,
    allocationsPerStep: (after.count - before.count) / STEPS,
    bytesAllocatedPerStep: (after.bytes - before.bytes) / STEPS,
    rssMiB: {
      first: mib(rss[0]),
      last: mib(rss[rss.length - 1]),
      min: mib(Math.min(...rss)),
      max: mib(Math.max(...rss)),
    },
  }
  console.log(JSON.stringify(row))
  return row
}

const all = getNumThreads()
const rows = [...new Set([1, all])].flatMap((threads) => [
  measure('1 x 1M', [1 << 20], threads),
  measure(
    '200 x 1K',
    Array.from({ length: 200 }, () => 1024),
    threads,
  ),
])
writeFileSync(join(RESULTS, 'memory.json'), JSON.stringify({ date: new Date().toISOString(), rows }, null, 2))
