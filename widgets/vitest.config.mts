import { defineConfig } from 'vitest/config';

// Unit tests run in Node: the mirror works on @jupyter/ydoc's notebook (the model JupyterLab's
// views follow), so no browser DOM is needed.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
    // @jupyter/ydoc builds each new cell before adding it to the document; yjs warns about that.
    onConsoleLog: log => !log.includes('Invalid access: Add Yjs type to a document')
  }
});
