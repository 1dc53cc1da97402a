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
}

/**
 * Each optimizer at the learning rate people usually start from (the rate PyTorch's docs,
 * Keras' defaults or the original paper suggest), not tuned to this data set: the demo asks
 * how far each gets without tuning.
 */
export const RECIPES: readonly Recipe[] = [
  { id: 'sgd', label: 'SGD', className: 'SGD', options: { lr: 0.1 } },
  { id: 'sgd-momentum', label: 'SGD+momentum', className: 'SGD', options: { lr: 0.05, momentum: 0.9 } },
  { id: 'rmsprop', label: 'RMSprop', className: 'RMSprop', options: { lr: 1e-3 } },
  { id: 'adagrad', label: 'Adagrad', className: 'Adagrad', options: { lr: 1e-2 } },
  { id: 'adam', label: 'Adam', className: 'Adam', options: { lr: 1e-3 } },
  { id: 'adamw', label: 'AdamW', className: 'AdamW', options: { lr: 1e-3 } },
  { id: 'adamax', label: 'Adamax', className: 'Adamax', options: { lr: 2e-3 } },
  { id: 'nadam', label: 'NAdam', className: 'NAdam', options: { lr: 2e-3 } },
  { id: 'radam', label: 'RAdam', className: 'RAdam', options: { lr: 1e-3 } },
]

/** What `npm run demo` compares when `--optimizers` is not given (those that exist). */
export const DEFAULT_IDS: readonly string[] = ['sgd', 'sgd-momentum', 'rmsprop', 'adagrad', 'adam', 'adamw']

function classOf(recipe: Recipe): OptimizerClass | undefined {
  const value = (fastoptim as Record<string, unknown>)[recipe.className]
  return typeof value === 'function' ? (value as OptimizerClass) : undefined
}

/** Whether this build of fastoptim exports the recipe's class. */
export function isAvailable(recipe: Recipe): boolean {
  return classOf(recipe) !== undefined
}

export function findRecipe(id: string): Recipe | undefined {
  return RECIPES.find((recipe) => recipe.id === id)
}

/** A new optimizer over `params` with the recipe's options, `overrides` winning. */
export function createOptimizer(recipe: Recipe, params: Parameter[], overrides: Record<string, unknown> = {}): StepOptimizer {
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
