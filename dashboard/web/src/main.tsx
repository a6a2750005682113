import { render } from 'preact';
import { App } from './app';
import '@xterm/xterm/css/xterm.css';
import 'uplot/dist/uPlot.min.css';
import './style.css';

render(<App />, document.getElementById('app')!);
