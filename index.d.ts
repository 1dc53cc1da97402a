// The typed public surface of fastoptim: the facade's declarations, compiled from lib/.
export * from './dist/index'
