// The README's PyTorch snippets, run as they are written there (taken from README.md, so that they
// cannot drift): a fastoptim checkpoint loaded into torch.optim.Adam, which then steps with
// fastoptim's state, and a torch.optim.Adam state dict written for fastoptim, which loads it.
// They need python3 with torch and safetensors; without them the tests are skipped, saying so.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import { Adam, loadStateDict, saveStateDict } from '../lib'

const snippets = [
  ...readFileSync(join(__dirname, '..', 'README.md'), 'utf8').matchAll(/```python\n([\s\S]*?)```/g),
].map((match) => match[1])
const toTorch = snippets.find((code) => code.includes('safe_open('))
const fromTorch = snippets.find((code) => code.includes('save_file('))

const probe = spawnSync('python3', ['-c', 'import torch, safetensors'], { encoding: 'utf8' })
const hasTorch = probe.status === 0
const note = hasTorch ? '' : ' (skipped: python3 with torch and safetensors is not installed)'
const withTorch = hasTorch ? test.serial : test.serial.skip

test('the README has both PyTorch snippets', (t) => {
  t.truthy(toTorch, 'a snippet reading a fastoptim checkpoint into PyTorch')
  t.truthy(fromTorch, 'a snippet writing a PyTorch state dict for fastoptim')
})

/** Runs `code` with python3 in `cwd`; returns its last line of output, parsed as JSON. */
function python(code: string, cwd: string): unknown {
  const run = spawnSync('python3', ['-c', code], { cwd, encoding: 'utf8' })
  if (run.status !== 0) throw new Error(`python3 failed (${run.status}):\n${run.stderr}`)
  const lines = run.stdout.trim().split('\n')
  return JSON.parse(lines[lines.length - 1])
}

withTorch(`README: a fastoptim checkpoint loads into torch.optim.Adam, fused again, and steps on${note}`, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fastoptim-readme-'))
  try {
    // The README's w and b after three steps.
    const w = { data: new Float32Array(1000).fill(0.5), grad: new Float32Array(1000).fill(0.25) }
    const b = { data: new Float32Array(10).fill(-1), grad: new Float32Array(10).fill(-2) }
    const opt = new Adam([w, b], { lr: 1e-3 })
    for (let i = 0; i < 3; i++) opt.step()
    saveStateDict(join(dir, 'optimizer.safetensors'), opt.stateDict())
    const got = python(
      `${toTorch}
for p in params:
    p.grad = torch.ones_like(p)
state0 = {k: v.tolist() for k, v in opt.state[params[0]].items()}
opt.step()
print(json.dumps({"state0": state0, "fused": [g["fused"] for g in opt.param_groups],
                  "step": [float(opt.state[p]["step"]) for p in params]}))
`,
      dir,
    ) as { state0: { step: number; exp_avg: number[]; exp_avg_sq: number[] }; fused: boolean[]; step: number[] }
    const state = opt.getState(w)!
    t.is(got.state0.step, 3)
    t.deepEqual(got.state0.exp_avg, Array.from(state.expAvg))
    t.deepEqual(got.state0.exp_avg_sq, Array.from(state.expAvgSq))
    t.deepEqual(got.fused, [true])
    t.deepEqual(got.step, [4, 4])
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

withTorch(`README: a torch.optim.Adam state dict written as the README says loads into fastoptim${note}`, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fastoptim-readme-'))
  try {
    const want = python(
      `${fromTorch}
print(json.dumps({i: {k: v.flatten().tolist() if v.dim() else v.item() for k, v in s.items()} for i, s in sd["state"].items()}))
`,
      dir,
    ) as Record<string, { step: number; exp_avg: number[]; exp_avg_sq: number[] }>
    const weight = { data: new Float32Array(8), grad: null, shape: [2, 4] }
    const bias = { data: new Float32Array(2), grad: null, shape: [2] }
    const opt = new Adam([weight, bias])
    opt.loadStateDict(loadStateDict(join(dir, 'from-torch.safetensors')))
    for (const [i, param] of [weight, bias].entries()) {
      const state = opt.getState(param)!
      t.is(state.step, want[i].step)
      t.deepEqual(Array.from(state.expAvg), want[i].exp_avg)
      t.deepEqual(Array.from(state.expAvgSq), want[i].exp_avg_sq)
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
