// Preloaded with `node --import`: make every server that listens on a bare port
// (EverShop calls server.listen(port)) bind to 127.0.0.1 only.
import net from 'net';
const orig = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    if (args.length === 1 || typeof args[1] === 'function') {
      args.splice(1, 0, '127.0.0.1');
    }
  } else if (args[0] && typeof args[0] === 'object' && args[0].port !== undefined && !args[0].host) {
    args[0] = { ...args[0], host: '127.0.0.1' };
  }
  return orig.apply(this, args);
};
