// The types of `fastoptim/tfjs` for TypeScript's `moduleResolution: "node"` (node10), which does not
// read package.json's `exports`; node16, nodenext and bundler resolution find dist/tfjs.d.ts there.
export * from './dist/tfjs'
