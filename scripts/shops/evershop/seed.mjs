// Deterministic EverShop catalogue seed: run with cwd = the EverShop project root,
// DB_* env vars pointing at an empty database. Runs the core migrations, then seeds
// attributes, 3 categories, 18 products (one 3-colour variant group), a "homepage"
// collection, a US shipping zone with two Core shipping methods, and an admin user.
import fs from 'fs';
import path from 'path';
import { pathToFileURL } from 'url';

const ROOT = process.cwd();
const EV = path.join(ROOT, 'node_modules/@evershop/evershop/dist');
const imp = (p) => import(pathToFileURL(path.join(EV, p)).href);

const catalogue = JSON.parse(
  fs.readFileSync(path.join(ROOT, 'catalogue.json'), 'utf-8')
);

function description(text) {
  return [
    {
      id: 'r__d',
      size: 1,
      className: 'md:grid-cols-1',
      columns: [
        {
          id: 'c__d',
          size: 1,
          data: {
            time: 1729900000000,
            version: '2.31.0',
            blocks: [{ id: 'p1', type: 'paragraph', data: { text } }]
          }
        }
      ]
    }
  ];
}

async function main() {
  const { migrate } = await imp('bin/lib/bootstrap/migrate.js');
  const { getCoreModules } = await imp('bin/lib/loadModules.js');
  const { pool } = await imp('lib/postgres/connection.js');
  const { hashPassword } = await imp('lib/util/passwordHelper.js');
  const { seedAttributeGroup, seedAttributes } = await imp('bin/seed/seedAttributes.js');
  const { seedSamplePackage } = await imp('bin/seed/seedPackages.js');
  const { resolveAttributeOptions } = await imp('bin/seed/variantGroupHelpers.js');
  const createCategory = (await imp('modules/catalog/services/category/createCategory.js')).default;
  const createProduct = (await imp('modules/catalog/services/product/createProduct.js')).default;
  const createCollection = (await imp('modules/catalog/services/collection/createCollection.js')).default;

  console.log('migrating');
  await migrate(getCoreModules());
  const q = (sql, params = []) => pool.query(sql, params);

  // Admin user (same table the `evershop install` command creates)
  await q(
    `INSERT INTO admin_user (status, email, password, full_name) VALUES (true, $1, $2, 'Admin')
     ON CONFLICT (email) DO NOTHING`,
    ['admin@example.com', hashPassword('admin12345')]
  );

  const groupId = await seedAttributeGroup();
  await seedAttributes(groupId);
  const pkg = await seedSamplePackage();
  const color = (await q(`SELECT attribute_id FROM attribute WHERE attribute_code='color'`)).rows[0];

  // Drop the demo categories the catalog migration creates (Kids, Women, Men)
  await q(`DELETE FROM category WHERE category_id IN (
     SELECT category_description_category_id FROM category_description WHERE url_key IN ('kids','women','men'))`);
  const catIds = {};
  for (const [i, c] of catalogue.categories.entries()) {
    const r = await createCategory(
      {
        name: c.name,
        url_key: c.url_key,
        status: 1,
        include_in_nav: 1,
        position: i + 1,
        description: description(c.description),
        meta_title: c.name,
        meta_description: c.description
      },
      {}
    );
    catIds[c.url_key] = r.category_id;
  }
  await createCollection(
    { name: 'Featured Products', code: 'homepage', description: description('Featured products') },
    {}
  );
  const coll = (await q(`SELECT collection_id FROM collection WHERE code='homepage'`)).rows[0];

  const groups = {};
  for (const p of catalogue.products) {
    let variantGroupId;
    if (p.variant_group) {
      if (!groups[p.variant_group]) {
        const r = await q(
          `INSERT INTO variant_group (attribute_group_id, attribute_one, visibility)
           VALUES ($1, $2, true) RETURNING variant_group_id`,
          [groupId, color.attribute_id]
        );
        groups[p.variant_group] = r.rows[0].variant_group_id;
      }
      variantGroupId = groups[p.variant_group];
    }
    const data = {
      type: 'simple',
      visibility: true,
      status: true,
      sku: p.sku,
      name: p.name,
      url_key: p.url_key,
      price: p.price,
      weight: p.weight || 500,
      qty: 1000,
      manage_stock: true,
      stock_availability: true,
      group_id: groupId,
      category_id: catIds[p.category],
      package_id: pkg.package_id,
      meta_title: p.name,
      meta_description: p.description,
      description: description(p.description)
    };
    if (variantGroupId) data.variant_group_id = variantGroupId;
    if (p.color) {
      data.attributes = await resolveAttributeOptions([{ attribute_code: 'color', value: p.color }]);
    }
    const r = await createProduct(data, {});
    if (p.featured) {
      await q(`INSERT INTO product_collection (collection_id, product_id) VALUES ($1, $2)`, [
        coll.collection_id,
        r.insertId
      ]);
    }
  }

  // Shipping: one zone covering the US, two Core methods with flat rates.
  const zone = (
    await q(`INSERT INTO shipping_zone (name) VALUES ('United States') RETURNING shipping_zone_id`)
  ).rows[0].shipping_zone_id;
  await q(`INSERT INTO shipping_zone_country (zone_id, country) VALUES ($1, 'US')`, [zone]);
  await q(
    `INSERT INTO shipping_zone_provider (zone_id, provider_code, is_enabled) VALUES ($1, 'core', true)
     ON CONFLICT DO NOTHING`,
    [zone]
  );
  for (const [i, m] of catalogue.shipping_methods.entries()) {
    const id = (
      await q(
        `INSERT INTO core_shipping_method (name, is_enabled, sort_order) VALUES ($1, true, $2)
         ON CONFLICT (name) DO UPDATE SET is_enabled = true RETURNING core_shipping_method_id`,
        [m.name, i]
      )
    ).rows[0].core_shipping_method_id;
    await q(
      `INSERT INTO core_shipping_method_rate (method_id, zone_id, is_enabled, cost) VALUES ($1, $2, true, $3)`,
      [id, zone, m.cost]
    );
  }
  // Storefront widgets: category menu in the header (all routes) and the
  // featured collection plus one product list per category on the home page.
  const menus = [];
  for (const c of catalogue.categories) {
    const uuid = (await q(`SELECT uuid FROM category WHERE category_id=$1`, [catIds[c.url_key]])).rows[0].uuid;
    menus.push({ name: c.name, type: 'category', uuid, id: c.url_key, children: [] });
  }
  const widget = async (name, type, settings, route, area, sort) => {
    const id = (
      await q(
        `INSERT INTO widget_instance (name, type, settings, status) VALUES ($1, $2, $3, true) RETURNING widget_instance_id`,
        [name, type, JSON.stringify(settings)]
      )
    ).rows[0].widget_instance_id;
    await q(`INSERT INTO widget_placement (widget_instance_id, route, area, sort_order) VALUES ($1, $2, $3, $4)`, [
      id, route, area, sort
    ]);
  };
  await widget('Main menu', 'basic_menu', { menus, isMain: true, className: '' }, 'all', 'headerMiddleLeft', 1);
  await widget(
    'Featured products', 'collection_products',
    { collection: 'homepage', count: 8, countPerRow: 4, heading: 'Featured products' },
    'homepage', 'content', 1
  );
  // Payment: cash on delivery on (also forced in config/default.json: system.cod.status)
  await q(
    `INSERT INTO setting (name, value, is_json) VALUES ('codPaymentStatus', '1', false), ('codDisplayName', 'Cash on Delivery', false)
     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value`
  );
  // Process the queued events (url rewrites for categories/products, etc.) here,
  // one at a time in emit order, so URLs are deterministic (/category/product)
  // instead of racing in the server's event subscriber at first start.
  const { loadSubscribers } = await imp('lib/event/loadSubscribers.js');
  const subscribers = await loadSubscribers(getCoreModules());
  const events = (await q(`SELECT event_id, name, data FROM event WHERE status='pending' ORDER BY event_id`)).rows;
  for (const ev of events) {
    for (const s of subscribers.filter((x) => x.event === ev.name)) {
      await s.subscriber(ev.data);
    }
    await q(`DELETE FROM event WHERE event_id=$1`, [ev.event_id]);
  }
  console.log(`processed ${events.length} events`);
  const n = (await q(`SELECT count(*)::int AS n FROM product`)).rows[0].n;
  console.log(`seeded ${n} products`);

}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e && e.stack ? e.stack : e);
    process.exit(1);
  }
);
