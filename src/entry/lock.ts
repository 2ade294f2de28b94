import { runLock } from '../actions/lock.js';

void runLock();
