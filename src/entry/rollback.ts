import { run } from '../actions/rollback.js';

void run();
