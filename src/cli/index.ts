export { buildProgram } from './program.ts';
export { EXIT_OK, EXIT_FAILURE, EXIT_USAGE } from './output.ts';
