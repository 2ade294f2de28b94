import { run } from '../actions/provision.js';

void run();
