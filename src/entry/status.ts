import { run } from '../actions/status.js';

void run();
