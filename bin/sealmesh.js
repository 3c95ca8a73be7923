#!/usr/bin/env node
// Entry point of the published package, which runs the compiled CLI from dist/.
import '../dist/cli/main.js';
