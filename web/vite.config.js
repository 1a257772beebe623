// The dashboard is served by `gpupool server` from this build's output (web/dist).
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  build: { outDir: "dist", emptyOutDir: true, assetsDir: "assets", sourcemap: false },
  server: { proxy: { "/v1": "http://127.0.0.1:7070" } },
});
