import * as fastoptim from '../lib'
import type { Parameter } from '../lib'

/** What the demo needs of an optimizer: the torch.optim loop's two calls. */
export interface StepOptimizer {
  step(): void
  zeroGrad(setToNone?: boolean): void
  getState?(param: Parameter): Record<string, unknown> | undefined
  /** The options groups get by default (eps, betas, ...), read to interpret the state. */
  readonly defaults?: Readonly<Record<string, unknown>>
}

type OptimizerClass = new (params: Parameter[], options?: Record<string, unknown>) => StepOptimizer

/** One optimizer as the demo runs it: a fastoptim class and the options it gets. */
export interface Recipe {
  /** Its name on the command line. */
  readonly id: string
  /** Its name in tables and plots. */
  readonly label: string
  /** The class exported by fastoptim. */
  readonly className: string
  /** PyTorch's option names in camelCase; `lr` is always given. */
  readonly options: Readonly<{ lr: number } & Record<string, unknown>>
  /** Whether it takes Float32Array parameters only (the adaptivity problems are Float64Array). */
  readonly float32Only?: boolean
}

/**
 * The learning rate each optimizer starts from, by its name in the registry: the rate people
 * usually start from (the rate PyTorch's docs, Keras' defaults or the original paper suggest), not
 * tuned to this data set: the demo asks how far each gets without tuning.
 */
const LEARNING_RATES: Readonly<Record<string, number>> = {
  SGD: 0.1,
  RMSprop: 1e-3,
  Adagrad: 1e-2,
  Adam: 1e-3,
  AdamW: 1e-3,
  Adamax: 2e-3,
  NAdam: 2e-3,
  RAdam: 1e-3,
}

/**
 * The rate of an optimizer the table lacks: its own default lr, which is PyTorch's (read from the
 * core, as `Class.defaults` has it), or 1e-3, Adam's, if it has no numeric one.
 */
const FALLBACK_LR = 1e-3

function startingRate(name: string): number {
  const known = LEARNING_RATES[name]
  if (known !== undefined) return known
  const lr = (fastoptim as unknown as Record<string, { defaults?: { lr?: unknown } } | undefined>)[name]?.defaults?.lr
  return typeof lr === 'number' ? lr : FALLBACK_LR
}

/** More recipes of an optimizer, run after its plain one (the recipe id is the lowercase name). */
const VARIANTS: Readonly<Record<string, readonly Omit<Recipe, 'className'>[]>> = {
  SGD: [{ id: 'sgd-momentum', label: 'SGD+momentum', options: { lr: 0.05, momentum: 0.9 } }],
}

/**
 * Every optimizer of the registry, in its order, each at its starting rate (then its variants):
 * an optimizer added to the core is on the demo's list without an edit here.
 */
export const RECIPES: readonly Recipe[] = fastoptim.algorithms().flatMap(({ name, sparse }) =>
  // The demo's network has dense gradients: an optimizer of sparse ones (SparseAdam) has no recipe.
  sparse
    ? []
    : [
        { id: name.toLowerCase(), label: name, className: name, options: { lr: startingRate(name) } },
        ...(VARIANTS[name] ?? []).map((variant) => ({ ...variant, className: name })),
      ],
)

/**
 * Optimizers outside the registry (their state is not one float array per buffer), each with its
 * reference's default rate: bitsandbytes' 8-bit Adam, whose first layer's weights (784 × hidden,
 * over its 4096-element threshold) keep 8-bit state.
 */
const OUTSIDE_REGISTRY: readonly Recipe[] = [
  { id: 'adam8bit', label: 'Adam8bit', className: 'Adam8bit', options: { lr: 1e-3 }, float32Only: true },
]

/** Every recipe, the registry's first. */
export const ALL_RECIPES: readonly Recipe[] = [...RECIPES, ...OUTSIDE_REGISTRY]

/** What `npm run demo` compares when `--optimizers` is not given (those that exist). */
export const DEFAULT_IDS: readonly string[] = ['sgd', 'sgd-momentum', 'rmsprop', 'adagrad', 'adam', 'adamw', 'adam8bit']

function classOf(recipe: Recipe): OptimizerClass | undefined {
  const value = (fastoptim as Record<string, unknown>)[recipe.className]
  return typeof value === 'function' ? (value as OptimizerClass) : undefined
}

/** Whether this build of fastoptim exports the recipe's class. */
export function isAvailable(recipe: Recipe): boolean {
  return classOf(recipe) !== undefined
}

export function findRecipe(id: string): Recipe | undefined {
  return ALL_RECIPES.find((recipe) => recipe.id === id)
}

/** A new optimizer over `params` with the recipe's options, `overrides` winning. */
export function createOptimizer(
  recipe: Recipe,
  params: Parameter[],
  overrides: Record<string, unknown> = {},
): StepOptimizer {
  const Class = classOf(recipe)
  if (Class === undefined) throw new Error(`fastoptim has no ${recipe.className} in this build`)
  return new Class(params, { ...recipe.options, ...overrides })
}

/** Short option text for tables: `lr=0.05 momentum=0.9`. */
export function describeOptions(options: Record<string, unknown>): string {
  return Object.entries(options)
    .map(([key, value]) => `${key}=${Array.isArray(value) ? value.join(',') : String(value)}`)
    .join(' ')
}
