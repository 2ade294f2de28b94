import { runUnlock } from '../actions/lock.js';

void runUnlock();
