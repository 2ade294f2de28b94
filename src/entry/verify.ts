import { run } from '../actions/verify.js';

void run();
