// The types of `fastoptim/distributed` for TypeScript's `moduleResolution: "node"` (node10), which
// does not read package.json's `exports`; node16, nodenext and bundler resolution find
// dist/distributed/index.d.ts there.
export * from './dist/distributed/index'
