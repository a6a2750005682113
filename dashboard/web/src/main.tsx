import { render } from 'preact';
import { App } from './app';
import '@xterm/xterm/css/xterm.css';
import 'uplot/dist/uPlot.min.css';
// Every stylesheet is imported here, into the one the page links: a
// stylesheet imported by a lazily loaded module would be left out.
import './style.css';
import './pages.css';
import './sandbox/sandbox.css';

render(<App />, document.getElementById('app')!);
