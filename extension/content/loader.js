// Content scripts declared in the manifest cannot be ES modules; this one line loads the real
// one (content/main.js, listed in web_accessible_resources for the mail origins only).
import(chrome.runtime.getURL("content/main.js")).then((m) => m.start());
