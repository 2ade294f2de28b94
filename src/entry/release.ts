import { run } from '../actions/release.js';

void run();
