import { run } from '../actions/switch.js';

void run();
